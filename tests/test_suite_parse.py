"""Check and scenario files: parsing, errors naming file and line, and the pure outputs."""

from __future__ import annotations

import hashlib
import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fix_suite import junit_statuses, tap_statuses
from oneroof import suite
from oneroof.errors import BadInput


def parse(text: str, name: str = "f.sql") -> suite.SuiteFile:
    return suite.parse(textwrap.dedent(text).encode(), name)


def parse_error(text: str | bytes, name: str = "f.sql") -> BadInput:
    data = text if isinstance(text, bytes) else textwrap.dedent(text).encode()
    with pytest.raises(BadInput) as info:
        suite.parse(data, name)
    return info.value


# -- check files -------------------------------------------------------------------------------


def test_check_file_with_every_expectation() -> None:
    parsed = parse(
        """\
        -- A header comment, and a block comment: neither is SQL.
        /* nothing here */

        -- check: no_orphans
        -- expect: empty                 -- empty | rows=N | value=X | true
        select 1 where false;
        -- check: three rows
        -- some note about it
        -- expect: rows = 3
        -- timeout: 5s
        select * from generate_series(1, 3);
        -- check: a value
        -- expect: value='it''s'
        select 'it''s'
        -- check: holds
        -- EXPECT: TRUE
        -- timeout: 250ms
        select true;
        -- check: refused
        -- expect: error=unique_violation
        insert into t values (1);
        -- check: anything fails
        -- expect: error
        select 1/0;
        """
    )
    assert parsed.kind == suite.CHECKS
    assert [i.name for i in parsed.items] == [
        "no_orphans",
        "three rows",
        "a value",
        "holds",
        "refused",
        "anything fails",
    ]
    expects = [i.expect for i in parsed.items]
    assert [e.kind for e in expects if e] == ["empty", "rows", "value", "true", "error", "error"]
    assert expects[1] is not None and expects[1].rows == 3
    assert expects[2] is not None and expects[2].value == "it's"
    assert expects[4] is not None and expects[4].sqlstate == "23505"
    assert expects[5] is not None and expects[5].sqlstate is None
    assert [i.timeout_ms for i in parsed.items] == [None, 5000, None, 250, None, None]
    assert parsed.items[0].statements[0] == suite.Statement("select 1 where false", 6)
    assert parsed.items[1].statements[0].line == 11
    assert parsed.counted == 6


def test_checksum_is_of_the_exact_bytes() -> None:
    data = b"-- check: a\r\n-- expect: true\r\nselect true;\r\n"
    parsed = suite.parse(data, "crlf.sql")
    assert parsed.sha256 == hashlib.sha256(data).hexdigest()
    assert parsed.items[0].expect is not None and parsed.items[0].expect.kind == "true"


@pytest.mark.parametrize(
    ("expect", "value"),
    [
        ("value='a -- b'", "a -- b"),
        ("value='a -- b'   -- a note", "a -- b"),
        ("value='it''s -- kept' -- dropped", "it's -- kept"),
        ("value = 'x--y'", "x--y"),
        ("value=''  -- the empty string", ""),
        ("value=a -- a note", "a"),
        ("value=Bob's -- an apostrophe opens no quote", "Bob's"),
        ("value='a -- never closed", "'a"),
    ],
)
def test_a_double_dash_inside_a_quoted_value_is_no_comment(expect: str, value: str) -> None:
    parsed = parse(f"-- check: c\n-- expect: {expect}\nselect 1;\n")
    expectation = parsed.items[0].expect
    assert expectation is not None and expectation.kind == "value"
    assert expectation.value == value


def test_a_double_dash_inside_a_quoted_scenario_name_is_no_comment() -> None:
    parsed = parse("-- scenario: 'a -- b' -- a note\n-- step: s\nselect 1;\n")
    assert parsed.scenario == "'a -- b'"


# -- scenario files ----------------------------------------------------------------------------


def test_scenario_with_steps_asserts_and_expected_errors() -> None:
    parsed = parse(
        """\
        -- scenario: candidate_to_active
        -- a comment about the scenario
        -- timeout: 1min
        -- assert: nothing yet
        -- expect: value=0
        select count(*) from t;
        -- step: add things; split by the parser, not by ';'
        insert into t values (1, 'a;b');
        create function f() returns int language plpgsql as $$
        begin
          return 1;
        end $$;
        savepoint mine;
        rollback to savepoint mine;
        -- assert: trigger refuses
        -- expect: error=P0001
        insert into guarded values (1);
        """
    )
    assert parsed.kind == suite.SCENARIO
    assert parsed.scenario == "candidate_to_active"
    assert parsed.timeout_ms == 60_000
    kinds = [(i.kind, i.name) for i in parsed.items]
    assert kinds == [
        ("assert", "nothing yet"),
        ("step", "add things; split by the parser, not by ';'"),
        ("assert", "trigger refuses"),
    ]
    step = parsed.items[1]
    assert [s.line for s in step.statements] == [8, 9, 13, 14]
    assert step.statements[0].sql == "insert into t values (1, 'a;b')"
    assert "return 1;" in step.statements[1].sql
    assert parsed.counted == 2


def test_reference_workspace_suites_parse() -> None:
    root = Path(__file__).parent.parent / "examples" / "one-roof"
    files = suite.load([root / "checks", root / "scenarios"])
    kinds = [f.kind for f in files]
    assert suite.CHECKS in kinds and suite.SCENARIO in kinds
    assert kinds == sorted(kinds)  # the folders in the order given: checks, then scenarios
    assert all(file.items for file in files)


# -- parse errors: file and line, before anything is sent ---------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("-- check: a\nselect 1;\n", 1, "has no -- expect:"),
        ("-- check: a\n-- expect: some\nselect 1;\n", 2, "unknown expectation"),
        ("-- check: a\n-- expect: rows=x\nselect 1;\n", 2, "whole number"),
        ("-- check: a\n-- expect: value=\nselect 1;\n", 2, "value= needs a value"),
        ("-- check: a\n-- expect: error=nonsense_name\nselect 1;\n", 2, "SQLSTATE"),
        ("-- check: a\n-- expect: empty\n-- just a comment\n", 1, "has no SQL"),
        ("-- check: a\n-- expect: empty\n", 1, "has no SQL"),
        ("-- check: a\n-- expect: empty\nselect 1;\nselect 2;\n", 4, "2 statements"),
        ("-- check:\n-- expect: empty\nselect 1;\n", 1, "needs a name"),
        ("-- check: a\n-- expect: empty\n-- expect: true\nselect 1;\n", 3, "second -- expect:"),
        ("-- check: a\n-- expect: empty\n-- timeout: soon\nselect 1;\n", 3, "not a duration"),
        ("-- check: a\n-- expect: empty\n-- timeout: 5\nselect 1;\n", 3, "not a duration"),
        ("-- check: a\n-- expect: empty\n-- timeout: 0s\nselect 1;\n", 3, "at least 1ms"),
        ("-- check: a\n-- expect: empty\nselec 1;\n", 3, "does not parse"),
        ("-- check: a\n-- expect: empty\nselect (1\n\n", 3, "does not parse"),
        ("-- check: a\n-- expect: empty\ncommit;\n", 3, "transaction control"),
        (
            "-- check: a\n-- expect: empty\nselect 1;\n-- check: a\n-- expect: empty\nselect 2;\n",
            4,
            "second check named",
        ),
        ("select 1;\n-- check: a\n-- expect: empty\nselect 1;\n", 1, "SQL before the first"),
        ("-- expect: empty\nselect 1;\n", 1, "outside a check"),
        ("-- timeout: 1s\n-- check: a\n-- expect: empty\nselect 1;\n", 1, "outside a check"),
        ("-- just a comment\n", 1, "no -- check: or -- scenario:"),
        ("", 1, "no -- check: or -- scenario:"),
        ("-- assert: a\n-- expect: empty\nselect 1;\n", 1, "before any -- scenario:"),
        ("-- step: a\nselect 1;\n", 1, "before any -- scenario:"),
        ("-- scenario: s\n", 1, "has no -- step: or -- assert:"),
        ("-- scenario: s\n-- step: a\n-- expect: empty\nselect 1;\n", 3, "steps have no"),
        (
            "-- scenario: s\n-- step: a\n-- just a comment\n"
            "-- assert: b\n-- expect: true\nselect true;\n",
            2,
            "has no SQL",
        ),
        (
            "-- scenario: s\n-- assert: b\n-- expect: true\nselect true; select false;\n",
            4,
            "an assert is one statement",
        ),
        ("-- scenario: s\n-- assert: b\nselect true;\n", 2, "has no -- expect:"),
        ("-- scenario: s\nselect 1;\n-- step: a\nselect 1;\n", 2, "SQL before the first -- step:"),
        ("-- scenario: s\n-- step: a\nbegin;\n", 3, "transaction control"),
        ("-- scenario: s\n-- step: a\nsavepoint oneroof_sp_1;\n", 3, "belong to oneroof"),
        ("-- scenario: s\n-- step: a\nselect 1;\n-- scenario: t\n", 4, "second -- scenario:"),
        ("-- scenario: s\n-- step: a\nselect 1;\n-- check: c\n", 4, "not both"),
        ("-- check: c\n-- expect: empty\nselect 1;\n-- scenario: s\n", 4, "not both"),
        (b"-- check: a\n-- expect: empty\nselect '\xff';\n", 3, "not UTF-8"),
        ("-- check: a\n-- expect: empty\nselect '\x00';\n", 3, "NUL byte"),
    ],
)
def test_parse_errors_name_file_and_line(text: str | bytes, line: int, words: str) -> None:
    data = text if isinstance(text, bytes) else text.encode()
    with pytest.raises(BadInput) as info:
        suite.parse(data, "suite/x.sql")
    error = info.value
    assert error.file == "suite/x.sql"
    assert error.line == line, str(error)
    assert words in str(error)
    assert str(error).startswith(f"suite/x.sql:{line}: ")


def test_load_reads_folders_recursively_in_name_order(tmp_path: Path) -> None:
    check = "-- check: {0}\n-- expect: value=1\nselect 1;\n"
    for relative in ["b/02.sql", "b/01.sql", "a.sql", "c/z/1.sql", "b/notes.txt", ".hidden/x.sql"]:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(check.format(relative.replace("/", "_")))
    files = suite.load([tmp_path])
    assert [Path(f.path).relative_to(tmp_path).as_posix() for f in files] == [
        "a.sql",
        "b/01.sql",
        "b/02.sql",
        "c/z/1.sql",
    ]
    # a file named twice runs once
    assert len(suite.load([tmp_path / "a.sql", tmp_path, tmp_path / "a.sql"])) == 4


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        suite.load([tmp_path / "missing.sql"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match=r"no \*\.sql file"):
        suite.load([tmp_path / "empty"])
    good = tmp_path / "good.sql"
    good.write_text("-- check: a\n-- expect: true\nselect true;\n")
    bad = tmp_path / "z_bad.sql"
    bad.write_text("-- check: a\nselect true;\n")
    with pytest.raises(BadInput) as info:
        suite.load([good, bad])  # every file is parsed before anything runs
    assert info.value.file == str(bad) and info.value.line == 1


def test_durations() -> None:
    assert suite.duration_ms("250ms") == 250
    assert suite.duration_ms("5s") == 5000
    assert suite.duration_ms("1.5s") == 1500
    assert suite.duration_ms("2min") == 120_000
    assert suite.duration_ms("1 h") == 3_600_000
    for bad in ("5", "s", "-1s", "5 sec", "0ms", "100000h"):
        with pytest.raises(ValueError):
            suite.duration_ms(bad)


# -- judging rows -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expect", "rows", "holds"),
    [
        ("empty", [], True),
        ("empty", [(1,)], False),
        ("rows=2", [(1,), (2,)], True),
        ("rows=2", [(1,)], False),
        ("value=1", [(1,)], True),
        ("value=1.0", [(1,)], True),
        ("value=1", [(2,)], False),
        ("value=1", [(1,), (1,)], False),
        ("value=1", [(1, 2)], False),
        ("value=pending", [("pending",)], True),
        ("value='pending'", [("pending",)], True),
        ("value=null", [(None,)], True),
        ("value=t", [(True,)], True),
        ("value=false", [(False,)], True),
        ("true", [(True,)], True),
        ("true", [(False,)], False),
        ("true", [(None,)], False),
        ("true", [], False),
        ("error", [], False),
    ],
)
def test_expectations_judge_rows(expect: str, rows: list[tuple[object, ...]], holds: bool) -> None:
    expectation = suite.parse_expectation(expect)
    assert (expectation.judge(rows) is None) is holds


def test_expected_errors() -> None:
    any_error = suite.parse_expectation("error")
    assert any_error.matches_error("P0001")
    assert not any_error.matches_error("57014")  # a timeout is not the refusal under test
    assert not any_error.matches_error(None)
    specific = suite.parse_expectation("error=23505")
    assert specific.matches_error("23505") and not specific.matches_error("P0001")
    assert suite.parse_expectation("error=query_canceled").matches_error("57014")


# -- outputs ------------------------------------------------------------------------------------


def _sample_result() -> suite.RunResult:
    def item(kind: str, name: str, status: suite.Status, **extra: object) -> suite.ItemResult:
        return suite.ItemResult("s/a.sql", kind, name, 3, status, 1.5, **extra)  # type: ignore[arg-type]

    checks = suite.FileResult(
        "s/a.sql",
        "ab" * 32,
        suite.CHECKS,
        None,
        [
            item("check", "ok # one", suite.Status.PASSED, expected="empty", got="0 rows"),
            item("check", "bad", suite.Status.FAILED, expected="rows=2", got="1 row"),
            item("check", "boom", suite.Status.ERROR, sqlstate="22012", message="division by zero"),
            item("check", "slow", suite.Status.TIMEOUT, sqlstate="57014", message="canceling"),
            item("check", "sneaky", suite.Status.REFUSED, message="refused on production"),
        ],
    )
    scenario = suite.FileResult(
        "s/b.sql",
        "cd" * 32,
        suite.SCENARIO,
        "sc",
        [
            item("step", "s1", suite.Status.ERROR, sqlstate="42P01", message="no table"),
            item("assert", "a1", suite.Status.NOT_REACHED, message="step 's1' ended in error"),
            item("assert", "a2", suite.Status.NOT_APPLICABLE, message="writes"),
        ],
    )
    return suite.RunResult("clone", "A", "x_clone", [checks, scenario], None, "now", 12.0)


def test_totals_and_verdict() -> None:
    result = _sample_result()
    assert result.passed == 1
    assert result.total == 6  # 5 checks + 1 reachable assertion; not applicable left out
    assert result.not_applicable == 1
    assert not result.ok
    assert result.residue_free is None
    counts = result.counts()
    assert counts["passed"] == 1 and counts["not reached"] == 1 and counts["refused"] == 1


def test_not_applicable_neither_passes_nor_fails() -> None:
    result = suite.RunResult(
        "production",
        None,
        "prod",
        [
            suite.FileResult(
                "a.sql",
                "00",
                suite.SCENARIO,
                "s",
                [suite.ItemResult("a.sql", "assert", "x", 1, suite.Status.NOT_APPLICABLE)],
            ),
            suite.FileResult(
                "b.sql",
                "00",
                suite.CHECKS,
                None,
                [suite.ItemResult("b.sql", "check", "y", 1, suite.Status.PASSED)],
            ),
        ],
        None,
        "now",
    )
    assert result.ok and (result.passed, result.total, result.not_applicable) == (1, 1, 1)
    assert "1 not applicable to production" in result.summary()


def test_a_run_that_checked_nothing_is_not_a_pass() -> None:
    only_skipped = suite.FileResult(
        "a.sql",
        "00",
        suite.SCENARIO,
        "s",
        [suite.ItemResult("a.sql", "assert", "x", 1, suite.Status.NOT_APPLICABLE)],
    )
    for files in ([only_skipped], [], [suite.FileResult("e.sql", "00", suite.CHECKS, None, [])]):
        result = suite.RunResult("production", None, "prod", files, None, "now")
        assert result.nothing_checked and not result.ok and result.verdict == "failed"
        assert result.summary().startswith("nothing was checked")
        assert result.to_dict()["nothing_checked"] is True


def test_junit_and_tap_carry_the_same_statuses() -> None:
    result = _sample_result()
    expected = [str(i.status) for i in result.items]
    assert junit_statuses(suite.to_junit(result)) == expected
    assert tap_statuses(suite.to_tap(result)) == expected
    assert [i["status"] for f in result.to_dict()["files"] for i in f["items"]] == expected
    tap = suite.to_tap(result)
    assert tap.startswith("TAP version 13\n1..8\n")
    assert "ok 1 - s/a.sql: ok \\# one" in tap  # '#' would start a TAP directive
    assert '  sqlstate: "22012"' in tap


# -- properties ---------------------------------------------------------------------------------

NAMES = (
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
        min_size=1,
        max_size=30,
    )
    .map(lambda s: s.strip())
    # `--` at the start or after white space begins the directive's trailing comment
    .filter(lambda s: bool(s) and re.search(r"(^|\s)--", s) is None)
)
EXPECTS = st.sampled_from(
    ["empty", "true", "rows=0", "rows=12", "value=1", "value='x y'", "error", "error=23505"]
)
STATEMENTS = st.sampled_from(
    [
        "select 1",
        "select 'a;b' as x",
        "select $$ -- check: not a directive inline $$",
        "select count(*)\nfrom pg_class\nwhere relname = 'x'",
        "insert into t values (1, 'it''s')",
        "update t set v = 2 where id = 1",
        "create table x (a int)",
        "select /* ; */ 2",
    ]
)
COMMENTS = st.lists(
    st.sampled_from(["", "-- a comment", "   ", "/* block */", "-- expected: not a directive"]),
    max_size=2,
)
TIMEOUTS = st.one_of(st.none(), st.sampled_from(["5s", "250ms", "1min"]))


@st.composite
def check_files(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    checks = draw(
        st.lists(
            st.tuples(NAMES, EXPECTS, STATEMENTS, TIMEOUTS, COMMENTS),
            min_size=1,
            max_size=8,
            unique_by=lambda c: c[0],
        )
    )
    lines = draw(COMMENTS)
    for name, expect, statement, timeout, comments in checks:
        lines.append(f"-- check: {name}")
        lines.extend(comments)
        lines.append(f"-- expect: {expect}")
        if timeout:
            lines.append(f"-- timeout: {timeout}")
        lines.append(statement + draw(st.sampled_from([";", "", " ;"])))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"])), [(c[0], c[1]) for c in checks]


@st.composite
def scenario_files(draw: st.DrawFn) -> tuple[str, list[tuple[str, int]]]:
    blocks = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("step"), NAMES, st.lists(STATEMENTS, min_size=1, max_size=3)),
                st.tuples(st.just("assert"), NAMES, st.lists(STATEMENTS, min_size=1, max_size=1)),
            ),
            min_size=1,
            max_size=8,
        )
    )
    lines = [f"-- scenario: {draw(NAMES)}", *draw(COMMENTS)]
    for kind, name, statements in blocks:
        lines.append(f"-- {kind}: {name}")
        if kind == "assert":
            lines.append(f"-- expect: {draw(EXPECTS)}")
        lines.extend(draw(COMMENTS))
        lines.extend(s + ";" for s in statements)
    return "\n".join(lines), [(kind, len(statements)) for kind, _, statements in blocks]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(check_files())
def test_well_formed_check_files_round_trip(case: tuple[str, list[tuple[str, str]]]) -> None:
    text, checks = case
    parsed = suite.parse(text.encode(), "p.sql")
    assert parsed.kind == suite.CHECKS
    assert [(i.name, i.expect.text if i.expect else None) for i in parsed.items] == checks
    assert all(len(i.statements) == 1 for i in parsed.items)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario_files())
def test_well_formed_scenarios_round_trip(case: tuple[str, list[tuple[str, int]]]) -> None:
    text, blocks = case
    parsed = suite.parse(text.encode(), "p.sql")
    assert parsed.kind == suite.SCENARIO
    assert [(i.kind, len(i.statements)) for i in parsed.items] == blocks
    assert parsed.counted == sum(1 for kind, _ in blocks if kind == "assert")


FRAGMENTS = st.sampled_from(
    [
        "-- check: a\n",
        "-- check:\n",
        "-- scenario: s\n",
        "-- step: s\n",
        "-- assert: a\n",
        "-- expect: empty\n",
        "-- expect: rows=\n",
        "-- expect: value=1\n",
        "-- expect: error=XX\n",
        "-- timeout: 5s\n",
        "-- timeout: 5x\n",
        "select 1;\n",
        "select (\n",
        "commit;\n",
        "$$\n",
        "'\n",
        "/*\n",
        "\n",
        "\x00",
        "\ufeff",
        "é",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.lists(FRAGMENTS, max_size=20).map("".join)))
def test_garbage_raises_nothing_but_bad_input(data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    try:
        parsed = suite.parse(raw, "g.sql")
    except BadInput as exc:
        assert exc.file == "g.sql"
        assert exc.line is None or 1 <= exc.line <= raw.count(b"\n") + 1
    else:
        assert parsed.items
