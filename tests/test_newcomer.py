"""A newcomer's first hour: init's examples pass, the CLI's defaults and errors help."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fix_clone import remove_clone, run_cli
from fix_pg import Server
from oneroof.suite import parsing


@pytest.fixture
def initialised(
    tmp_path: Path,
    prod_server: Server,
    prod_db: str,
    nonprod_server: Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Any:
    """`oneroof init` on a workspace whose DSNs are the test servers, as a user exports them."""
    path = tmp_path / "myws"
    code, _, err = run_cli(["init", str(path)], capsys)
    assert code == 0, err
    clone = f"i{prod_db.split('_')[-1]}_clone"
    toml = path / "oneroof.toml"
    toml.write_text(toml.read_text().replace('name = "app_clone"', f'name = "{clone}"'))
    monkeypatch.setenv("PROD_DSN", prod_server.reader_dsn(prod_db))
    monkeypatch.setenv("NONPROD_DSN", nonprod_server.dsn("postgres"))
    yield path
    remove_clone(nonprod_server, clone)


def test_init_examples_pass_on_any_database_and_run_checks_them(
    initialised: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--workspace", str(initialised)]
    code, _, err = run_cli([*base, "clone", "create"], capsys)
    assert code == 0, err
    # `check` runs on the clone unless told otherwise
    code, out, _ = run_cli([*base, "check", "checks", "scenarios", "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["target"] == "clone", out
    assert result["passed"] == result["total"] == 4
    code, out, err = run_cli([*base, "check", "checks", "--target", "production"], capsys)
    assert code == 0, out + err
    code, out, err = run_cli([*base, "rollout", "rehearse", "rollout/EXAMPLE"], capsys)
    assert code == 0, out + err
    # `run` runs the user's checks: the objective init wired to them is in the report
    code, out, err = run_cli([*base, "run", "--json"], capsys)
    report = json.loads(out)
    assert code == 0, err
    regression = [v for v in report["verdicts"] if v["objective"].startswith("A ")]
    assert regression and regression[0]["status"] == "PASS", report["verdicts"]
    assert "4/4" in regression[0]["headline"], regression
    assert Path(report["files"]["md"]).exists()
    # a second init on the same directory loses nothing
    code, _, err = run_cli(["init", str(initialised)], capsys)
    assert code == 2 and "already exists" in err


def test_a_check_on_a_clone_not_made_yet_says_how_to_make_it(
    initialised: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["--workspace", str(initialised), "check", "checks"], capsys)
    assert code != 0 and "oneroof clone create" in err and "Traceback" not in err


def test_fingerprint_diff_takes_the_newest_entry_and_exit_by_label(
    initialised: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--workspace", str(initialised)]
    assert run_cli([*base, "run"], capsys)[0] == 0
    code, out, err = run_cli([*base, "fingerprint", "diff", "entry", "exit", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["equal"] is True
    code, _, err = run_cli([*base, "fingerprint", "diff", "entry", "nope"], capsys)
    assert code == 2 and "no saved fingerprint with id or label 'nope'" in err


def test_an_unknown_audit_kind_lists_the_known_ones(
    initialised: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--workspace", str(initialised)]
    assert run_cli([*base, "doctor"], capsys)[0] == 0
    code, _, err = run_cli([*base, "audit", "show", "--kind", "nope"], capsys)
    assert code == 2 and "--kind 'nope'" in err and "audit" in err


def test_a_piped_clone_list_keeps_long_names_whole(
    initialised: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = initialised / "oneroof.toml"
    long = "a_rather_long_clone_name_that_a_narrow_table_would_cut_clone"
    text = toml.read_text()
    old = text.split('name = "', 1)[1].split('"', 1)[0]
    toml.write_text(text.replace(f'name = "{old}"', f'name = "{long}"'))
    base = ["--workspace", str(initialised)]
    try:
        assert run_cli([*base, "clone", "create"], capsys)[0] == 0
        code, out, _ = run_cli([*base, "clone", "list"], capsys)
        assert code == 0 and long in out and "golden" in out
    finally:
        run_cli([*base, "clone", "drop"], capsys)


def test_help_shows_defaults_and_no_value_for_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["check", "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    assert "[default: clone]" in text
    assert "<bool>" not in out


def _help_texts(command: Any, path: str = "oneroof") -> list[tuple[str, str]]:
    texts = [(path, command.help or ""), (path, command.short_help or "")]
    texts += [(f"{path} {p.name}", getattr(p, "help", None) or "") for p in command.params]
    for name, sub in getattr(command, "commands", {}).items():
        texts += _help_texts(sub, f"{path} {name}")
    return texts


def test_no_help_text_loses_a_bracketed_word_to_markup() -> None:
    from rich.text import Text
    from typer.main import get_command

    from oneroof.cli import app

    lost = [
        f"{where}: {text!r}"
        for where, text in _help_texts(get_command(app))
        if Text.from_markup(text).plain != text.replace("\\[", "[")
    ]
    assert not lost, "help rendered through Rich markup drops `[section]`: escape it as `\\[`"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            "-- check: x\n-- expcet: value=1\nselect 1;\n",
            "2: check 'x' has no -- expect: line; `-- expcet:` is not a directive "
            "(did you mean `-- expect:`?)",
        ),
        # prose is not a typo: a plural or a capitalised word in a comment stays a comment
        ("-- Checks: they read the catalog\n-- check: x\n-- expect: true\nselect true;\n", None),
    ],
)
def test_a_misspelled_directive_is_named_where_one_is_missing(
    tmp_path: Path, body: str, fragment: str | None
) -> None:
    file = tmp_path / "a.sql"
    file.write_text(body)
    if fragment is None:
        assert parsing.parse(file.read_bytes(), file).items
        return
    with pytest.raises(Exception) as raised:
        parsing.parse(file.read_bytes(), file)
    assert fragment in str(raised.value)


def test_a_misspelled_artifact_header_names_the_likely_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "ws" / "rollout" / "P"
    plan.mkdir(parents=True)
    (plan / "01_a.sql").write_text(
        textwrap.dedent(
            """\
            -- artifact: P_01
            -- gate: true
            -- expect-detla: public.t +1
            insert into t values (1);
            """
        )
    )
    (tmp_path / "ws" / "oneroof.toml").write_text('[production]\ndsn = "host=/nonexistent"\n')
    code, _, err = run_cli(
        ["--workspace", str(tmp_path / "ws"), "rollout", "plan", str(plan)], capsys
    )
    assert code == 2 and "01_a.sql:3:" in err and "did you mean `expect-delta:`?" in err


def test_outputs_say_each_thing_once_and_in_english(
    initialised: Path,
    prod_server: Server,
    prod_db: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = ["--workspace", str(initialised)]
    assert run_cli([*base, "clone", "create"], capsys)[0] == 0
    code, out, _ = run_cli([*base, "clone", "reset"], capsys)
    assert code == 0 and " reset in " in out and "resetd" not in out
    refused = initialised / "refused.sql"
    refused.write_text("-- check: a write\n-- expect: empty\ndelete from pg_catalog.pg_class;\n")
    code, out, _ = run_cli([*base, "check", str(refused), "--target", "production"], capsys)
    assert code == 1 and "refused" in out and "refused on production" not in out
    toml = initialised / "oneroof.toml"
    toml.write_text(
        toml.read_text().replace('# apply_dsn = "env:APPLY_DSN"', 'apply_dsn = "env:APPLY_DSN"')
    )
    monkeypatch.setenv("APPLY_DSN", prod_server.dsn(prod_db))
    assert run_cli([*base, "rollout", "rehearse", "rollout/EXAMPLE"], capsys)[0] == 0
    code, out, err = run_cli([*base, "rollout", "apply", "rollout/EXAMPLE", "--execute"], capsys)
    assert code == 0, out + err
    assert "applied: EXAMPLE_01_comment" in out and "applied: applied" not in out
