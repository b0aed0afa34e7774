"""Config errors: each kind exits 2 with one line naming file, key and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from oneroof import cli, config
from oneroof.errors import ConfigError


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "oneroof.toml").write_text(textwrap.dedent(text))
    return tmp_path


MINIMAL = """\
[production]
dsn = "env:SOME_PROD_DSN"
[clone]
server_dsn = "host=/tmp port=1"
[guard]
clone_name_pattern = "^[a-z_]+_clone$"
"""


def test_three_sections_are_a_valid_workspace(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, MINIMAL))
    assert cfg.clone.method == "dump"
    assert cfg.isolation.disable_triggers == []
    assert cfg.counters == {}
    assert cfg.production_dsn.raw == "env:SOME_PROD_DSN"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("[production]\ndsn = 'x'\ncolour = 'red'\n", 3, "production.colour: unknown key"),
        ("[production]\ndsn = 'x'\nscan_budget_rows = 'many'\n", 3, "scan_budget_rows"),
        ("[production]\ndsn = 'x'\n[clone]\nmethod = 'rsync'\n", 4, "clone.method"),
        ("[production]\n", 1, "production.dsn: required key is missing"),
        ("[production]\ndsn = 'x'\n[counters]\nospa = 3\n", 4, "counters.ospa"),
        ("[production]\ndsn = 'x'\n[guard]\nclone_name_pattern = '(['\n", 4, "regular expression"),
        ("[production]\ndsn = 'x'\n[[objective]]\nid = 'A'\n", 3, "objective[0].title"),
        ("[production]\ndsn = 'x\n", 2, "not valid TOML"),
        ("[production]\ndsn = 'x'\n[unknown]\na = 1\n", 3, "unknown: unknown section (known:"),
        # a typo names what it most likely meant, before what it left missing
        ("[prodution]\ndsn = 'x'\n", 1, "prodution: unknown section (did you mean [production]?)"),
        ("[production]\ndns = 'x'\n", 2, "production.dns: unknown key (did you mean dsn?)"),
        ("[production]\ndsn = 'x'\n[clone]\nmax_aeg = '1h'\n", 4, "did you mean max_age?"),
        (
            "[production]\ndsn = 'x'\n[[objective]]\nid = 'A'\ntitle = 't'\nsuite = []\n",
            6,
            "objective[0].suite: unknown key (did you mean suites?)",
        ),
    ],
)
def test_config_errors_name_file_key_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, fragment: str
) -> None:
    write(tmp_path, text)
    code, out, err = run_cli(["--workspace", str(tmp_path), "audit", "verify"], capsys)
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"oneroof.toml:{line}:" in lines[0]
    assert fragment in lines[0]
    assert out == ""


def test_missing_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["--workspace", str(tmp_path / "nowhere"), "doctor"], capsys)
    assert code == 2
    assert "oneroof.toml" in err and "no oneroof.toml" in err
    assert len(err.strip().splitlines()) == 1


def test_unset_environment_variable_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOME_PROD_DSN", raising=False)
    write(tmp_path, MINIMAL)
    code, _, err = run_cli(["--workspace", str(tmp_path), "doctor"], capsys)
    assert code == 2
    assert "oneroof.toml:2: production.dsn: environment variable SOME_PROD_DSN is not set" in err


def test_workspace_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, MINIMAL)
    monkeypatch.setenv("ONEROOF_WORKSPACE", str(tmp_path))
    assert config.load().workspace == tmp_path


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://alice:s3cr3t-pw@db.example:5432/app",
        "host=db.example user=alice password=s3cr3t-pw dbname=app",
        "postgresql://alice@db.example/app?password=s3cr3t-pw",
    ],
)
def test_passwords_are_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    write(tmp_path, f'[production]\ndsn = "{dsn}"\n')
    cfg = config.load(tmp_path)
    assert "s3cr3t-pw" not in cfg.production_dsn.redacted()
    assert "s3cr3t-pw" not in repr(cfg.production_dsn)
    # An unreachable server's message names the host but not the password.
    code, out, err = run_cli(["--workspace", str(tmp_path), "doctor"], capsys)
    assert code == 2
    assert "s3cr3t-pw" not in out + err
    assert "db.example" in err


def test_unknown_key_error_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse("[production]\ndsn='x'\n[isolation]\nreset = []\n", tmp_path / "oneroof.toml")
    assert info.value.line == 4


@pytest.mark.parametrize(
    "args",
    [["demo", "--objects", "abc"], ["no-such-command"], ["fingerprint", "diff"]],
)
def test_usage_errors_exit_2_without_traceback(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert "Traceback" not in err
