"""Artifact and plan parsing: headers, statements, checksums, and every bad input with file:line.

No database: everything here is refused (or accepted) before anything is sent.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from oneroof import config, rollout
from oneroof.errors import BadInput

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "one-roof"

TOML = """\
[production]
dsn = "dbname=nowhere"
[counters]
gap = "select 1"
ospa = "select 1"
candidates = "select 0"
"""


@pytest.fixture
def cfg(tmp_path: Path) -> config.Config:
    file = tmp_path / "oneroof.toml"
    file.write_text(TOML)
    return config.load(tmp_path)


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """\
    -- artifact: P_01
    -- gate: ospa >= 1
    -- gate: gap > 0   -- a trailing comment is not part of the expression
    -- expect-delta: core.ownership +gap
    -- expect-delta: Core."Odd Name" ~0
    -- expect-delta: core.ownership -0
    -- stop: candidates != gap
    -- auto: TRUE
    --
    -- Free text, Even: with a colon after a capitalised word.
    insert into core.ownership (note) values ('a; b -- not a comment');
    /* block ; comment */
    update core.ownership set note = $$x;y$$ where false;
    """


def test_a_good_artifact_parses_into_header_statements_and_checksum(
    cfg: config.Config, tmp_path: Path
) -> None:
    path = write(tmp_path / "plan", "01_good.sql", GOOD)
    artifact = rollout.parse_artifact(path, cfg.counters)
    assert artifact.id == "P_01"
    assert [g.text for g in artifact.gates] == ["ospa >= 1", "gap > 0"]
    assert [d.text for d in artifact.deltas] == [
        "core.ownership +gap",
        "core.Odd Name ~0",
        "core.ownership -0",
    ]
    assert [s.text for s in artifact.stops] == ["candidates != gap"]
    assert artifact.auto is True
    assert artifact.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [s.line for s in artifact.statements] == [11, 13]
    assert artifact.statements[0].sql.endswith("values ('a; b -- not a comment')")
    assert "$$x;y$$" in artifact.statements[1].sql
    assert artifact.delta_names == {"gap"}
    expected, problems = artifact.expected({"gap": 7})
    assert problems == []
    assert expected == {
        "core.ownership": {"inserted": 7, "updated": 0, "deleted": 0},
        "core.Odd Name": {"inserted": 0, "updated": 0, "deleted": 0},
    }
    _, problems = artifact.expected({"gap": None})
    assert problems == ["expect-delta core.ownership +gap: gap = NULL is not a row count"]


def test_set_local_and_a_byte_order_mark_are_fine(cfg: config.Config, tmp_path: Path) -> None:
    path = tmp_path / "01_ok.sql"
    path.write_bytes(
        "\ufeff-- artifact: A\n-- gate: true\nset local lock_timeout = '1s';\nselect 1;\n".encode()
    )
    artifact = rollout.parse_artifact(path, cfg.counters)
    assert [s.line for s in artifact.statements] == [3, 4]
    assert artifact.checksum == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_checksum_changes_with_any_byte(cfg: config.Config, tmp_path: Path) -> None:
    path = write(tmp_path / "plan", "01_good.sql", GOOD)
    first = rollout.parse_artifact(path, cfg.counters).checksum
    path.write_bytes(path.read_bytes() + b" ")
    assert rollout.parse_artifact(path, cfg.counters).checksum != first


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("-- gate: ospa >= 1\nselect 1;\n", 1, "missing `-- artifact: ID`"),
        ("-- artifact: A\nselect 1;\n", 1, "missing `-- gate: EXPR`"),
        ("-- artifact: A\n-- gates: ospa >= 1\nselect 1;\n", 2, "unknown header key 'gates'"),
        ("-- artifact: A\n-- artifact: B\n-- gate: true\nselect 1;\n", 2, "a second `artifact:`"),
        ("-- artifact: A B\n-- gate: true\nselect 1;\n", 1, "artifact id 'A B'"),
        ("-- artifact: A\n-- gate: nosuch > 1\nselect 1;\n", 2, "unknown name(s) nosuch"),
        ("-- artifact: A\n-- gate: true\n-- stop: gap = 1\nselect 1;\n", 3, "use =="),
        ("-- artifact: A\n-- gate: true\n-- stop: len(gap)\nselect 1;\n", 3, "function calls"),
        ("-- artifact: A\n-- gate: true\n-- expect-delta: ownership +1\nselect 1;\n", 3, "write"),
        ("-- artifact: A\n-- gate: true\n-- expect-delta: a.b *1\nselect 1;\n", 3, "write"),
        ("-- artifact: A\n-- gate: true\n-- expect-delta: a.b +1.5\nselect 1;\n", 3, "write"),
        (
            "-- artifact: A\n-- gate: true\n-- expect-delta: a.b +nosuch\nselect 1;\n",
            3,
            "unknown counter 'nosuch'",
        ),
        (
            "-- artifact: A\n-- gate: true\n-- expect-delta: a.b +1\n-- expect-delta: A.B +2\n"
            "select 1;\n",
            4,
            "declared twice (first on line 3)",
        ),
        ("-- artifact: A\n-- gate: true\n-- auto: yes\nselect 1;\n", 3, "true or false"),
        ("-- artifact: A\n-- gate: true\n-- auto: true\n-- auto: false\nselect 1;\n", 4, "second"),
        ("-- artifact: A\n-- gate:\nselect 1;\n", 2, "has no value"),
        ("-- artifact: A\n-- gate: true\nselect 1;\n-- stop: gap != 0\n", 4, "after the SQL"),
        ("-- artifact: A\n-- gate: true\n\n", 4, "no SQL statement"),
        ("-- artifact: A\n-- gate: true\nselect 1;\nselec 2;\n", 4, "parser cannot read"),
        ("-- artifact: A\n-- gate: true\nbegin;\nselect 1;\ncommit;\n", 3, "transaction"),
        ("-- artifact: A\n-- gate: true\nset lock_timeout = '1s';\n", 3, "SET LOCAL"),
        ("-- artifact: A\n-- gate: true\nreset all;\n", 3, "SET LOCAL"),
        ("/* x */\n-- artifact: A\n-- gate: true\nselect 1;\n", 2, "after the SQL"),
    ],
)
def test_bad_artifacts_name_file_and_line(
    cfg: config.Config, tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "plan" / "01_bad.sql"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(BadInput) as caught:
        rollout.parse_artifact(path, cfg.counters)
    assert caught.value.file == str(path)
    assert caught.value.line == line, str(caught.value)
    assert message in str(caught.value)


def test_plans_refuse_duplicate_ids_and_bad_requires(cfg: config.Config, tmp_path: Path) -> None:
    plan = tmp_path / "plan"
    write(plan, "01_a.sql", "-- artifact: A\n-- gate: true\nselect 1;\n")
    write(plan, "02_b.sql", "-- artifact: B\n-- gate: true\n-- requires: C\nselect 1;\n")
    write(plan, "03_c.sql", "-- artifact: C\n-- gate: true\nselect 1;\n")
    with pytest.raises(BadInput, match="which comes later in the plan") as caught:
        rollout.load_plan(plan, cfg)
    assert caught.value.file == str(plan / "02_b.sql") and caught.value.line == 3

    write(plan, "02_b.sql", "-- artifact: B\n-- gate: true\n-- requires: Z\nselect 1;\n")
    with pytest.raises(BadInput, match="is not an artifact of this plan"):
        rollout.load_plan(plan, cfg)

    write(plan, "02_b.sql", "-- artifact: A\n-- gate: true\nselect 1;\n")
    with pytest.raises(BadInput, match="duplicate artifact id 'A'") as caught:
        rollout.load_plan(plan, cfg)
    assert caught.value.line == 1

    with pytest.raises(BadInput, match="not a plan folder"):
        rollout.load_plan(tmp_path / "nowhere", cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match=r"no \.sql artifact"):
        rollout.load_plan(tmp_path / "empty", cfg)


def test_the_reference_plan_loads_with_its_auto_set_and_verify(tmp_path: Path) -> None:
    cfg = config.load(EXAMPLE)
    plan = rollout.load_plan(EXAMPLE / "rollout" / "F_ownership_seed", cfg)
    assert plan.name == "F_ownership_seed"
    assert [a.id for a in plan.artifacts] == [
        "F_prod_00_preflight",
        "F_prod_01_materialize_candidates",
        "F_prod_02_activate",
        "F_prod_03_verify",
    ]
    assert plan.auto_set == [
        "F_prod_00_preflight",
        "F_prod_01_materialize_candidates",
        "F_prod_02_activate",
    ]
    assert plan.verify_set == ["F_prod_03_verify"]
    activate = plan.artifact("F_prod_02_activate")
    assert [d.text for d in activate.deltas] == [
        "core.ownership +0",
        "core.ownership ~candidates",
        "core.ownership -0",
    ]
    assert activate.requires == ("F_prod_01_materialize_candidates",)
    assert [s.text for s in activate.stops] == ["gap != 0 or candidates != 0"]
    assert all(len(a.statements) == 1 for a in plan.artifacts)


def test_measured_and_expected_deltas_compare_exactly() -> None:
    measured = {"a.t": {"inserted": 2, "updated": 0, "deleted": 0}}
    assert (
        rollout.compare_deltas(measured, {"a.t": {"inserted": 2, "updated": 0, "deleted": 0}}) == []
    )
    assert rollout.compare_deltas(measured, {}) == [
        "a.t: +2 but no expect-delta declares this table"
    ]
    assert rollout.compare_deltas({}, {"a.t": {"inserted": 1, "updated": 0, "deleted": 0}}) == [
        "a.t +: 0 inserted, expected 1"
    ]
    before = {"a.t": (10, 1, 0), "a.u": (5, 5, 5)}
    after = {"a.t": (12, 1, 3), "a.u": (5, 5, 5), "a.v": (0, 4, 0)}
    assert rollout.measure_deltas(before, after) == {
        "a.t": {"inserted": 2, "updated": 0, "deleted": 3},
        "a.v": {"inserted": 0, "updated": 4, "deleted": 0},
    }
