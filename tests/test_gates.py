"""The gate language: what it accepts, how it evaluates (NULL included), and what it refuses."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from oneroof import config, gates
from oneroof.connect import Session
from oneroof.errors import BadInput


def holds(text: str, **values: Any) -> bool:
    return gates.evaluate(gates.parse(text), values).holds


def test_the_gates_of_the_reference_workspace() -> None:
    gate = gates.parse("ospa >= 1 and gap == 210")
    assert gate.names == ("gap", "ospa")
    closed = gates.evaluate(gate, {"ospa": 0, "gap": 210})
    assert not closed.holds
    assert closed.values == {"gap": 210, "ospa": 0}
    assert closed.describe() == "ospa >= 1 and gap == 210: closed (gap=210, ospa=0)"
    assert gates.evaluate(gate, {"ospa": 3, "gap": 210, "unused": 1}).holds
    assert holds("ospa >= 1 and gap == 0 and candidates == 0", ospa=1, gap=0, candidates=0)
    assert holds("active_event_types >= 1 and dispatcher", active_event_types=2, dispatcher=True)
    assert not holds(
        "active_event_types >= 1 and dispatcher", active_event_types=2, dispatcher=False
    )


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("not frozen", {"frozen": False}, True),
        ("not frozen", {"frozen": True}, False),
        ("clone_verified", {"clone_verified": True}, True),
        ("true", {}, True),
        ("False", {}, False),
        ("not (a > 1 or b < 0)", {"a": 1, "b": 0}, True),
        ("1 <= gap < 10", {"gap": 9}, True),
        ("1 <= gap < 10", {"gap": 10}, False),
        ("0 < a < b <= 5", {"a": 1, "b": 5}, True),
        ("gap > -1", {"gap": 0}, True),
        ("gap != +3", {"gap": 3}, False),
        ("mode == 'live'", {"mode": "live"}, True),
        ('mode < "m"', {"mode": "live"}, True),
        ("flag == true", {"flag": True}, True),
        ("flag != True", {"flag": True}, False),
        ("count", {"count": 2}, True),
        ("count", {"count": 0}, False),
        ("ratio >= 1", {"ratio": Decimal("1.5")}, True),
        ("ratio == 1", {"ratio": Decimal("1.00")}, True),
        ("(a == 1) == (b == 2)", {"a": 1, "b": 2}, True),
        ("mode == '\\d'", {"mode": "\\d"}, True),
    ],
)
def test_evaluation(text: str, values: dict[str, Any], expected: bool) -> None:
    assert holds(text, **values) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x == 1", False),
        ("x != 1", False),
        ("not (x == 1)", False),
        ("x", False),
        ("not x", False),
        ("x == 1 or true", True),
        ("true or x == 1", True),
        ("x == 1 and false", False),
        ("not (x == 1 and false)", True),
        ("1 <= x < 10", False),
        ("2 < 1 < x", False),
    ],
)
def test_null_never_opens_a_gate(text: str, expected: bool) -> None:
    assert holds(text, x=None) is expected


@pytest.mark.parametrize(
    ("text", "values", "message"),
    [
        ("mode > 1", {"mode": "live"}, "cannot compare text live with number 1"),
        ("flag < true", {"flag": False}, "booleans compare only with == and !="),
        ("flag == 1", {"flag": True}, "cannot compare boolean true with number 1"),
        ("mode", {"mode": "live"}, "is not a truth value"),
        ("not mode", {"mode": "live"}, "is not a truth value"),
    ],
)
def test_type_errors_are_bad_input(text: str, values: dict[str, Any], message: str) -> None:
    gate = gates.parse(text, file="t.sql", line=4)
    with pytest.raises(BadInput, match=message) as caught:
        gates.evaluate(gate, values)
    assert caught.value.file == "t.sql" and caught.value.line == 4


def test_a_missing_value_is_bad_input() -> None:
    with pytest.raises(BadInput, match="no value for gap"):
        gates.evaluate(gates.parse("gap == 0"), {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("gap = 0", "use =="),
        ("a && b", "use and / or"),
        ("a <> 1", "use !="),
        ("__import__('os').system('id')", "function calls"),
        ("open('/etc/passwd')", "function calls"),
        ("gap.real", "attribute access"),
        ("a[0]", "subscripts"),
        ("gap + 1 > 2", "arithmetic"),
        ("a if b else c", "conditional"),
        ("lambda: 1", "lambdas"),
        ("f'{a}' == 'x'", "f-strings"),
        ("[a for a in b]", "comprehensions"),
        ("(a := 1)", "assignments"),
        ("a is None", "unsupported comparison 'is'"),
        ("1 is 1", "unsupported comparison 'is'"),
        ("a in (1, 2)", "unsupported comparison 'in'"),
        ("a not in b", "unsupported comparison 'not in'"),
        ("gap > 1.5", "only integer numbers"),
        ("b'x' == a", "unsupported literal"),
        ("1j == a", "unsupported literal"),
        ("None == a", "unsupported literal"),
        ("... == a", "unsupported literal"),
        ("-a > 1", "a sign applies to an integer literal only"),
        ("~a", "unsupported operator"),
        ("(a, b)", "tuples"),
        ("{a: 1}", "dicts"),
        ("not " * 70 + "a", "nested deeper than"),
        ("a\x00", "NUL"),
        ("a == 1 " + "and a == 1 " * 500, "longer than"),
    ],
)
def test_refused_constructs(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message) as caught:
        gates.parse(text, file="plan/01_x.sql", line=7)
    assert caught.value.file == "plan/01_x.sql" and caught.value.line == 7
    assert str(caught.value).startswith("plan/01_x.sql:7: ")


def test_unknown_names_are_refused_when_the_known_names_are_given() -> None:
    with pytest.raises(BadInput, match=r"unknown name\(s\) nosuch \(known counters: gap, ospa\)"):
        gates.parse("ospa >= 1 and nosuch", known={"ospa", "gap"}, file="f.sql", line=2)
    assert gates.parse("true and ospa >= 1", known={"ospa"}).names == ("ospa",)


def test_results_serialise() -> None:
    result = gates.evaluate(gates.parse("r >= 1 and x"), {"r": Decimal("2.5"), "x": None})
    assert result.to_dict() == {
        "expression": "r >= 1 and x",
        "holds": False,
        "values": {"r": "2.5", "x": None},
    }
    assert result.describe() == "r >= 1 and x: closed (r=2.5, x=NULL)"


def test_read_values_takes_builtins_and_refuses_unknown_counters(tmp_path: Path) -> None:
    (tmp_path / "oneroof.toml").write_text(
        '[production]\ndsn = "dbname=x"\n[counters]\ngap = "select 1"\n'
    )
    cfg = config.load(tmp_path)
    no_session = cast(Session, None)  # built-ins alone never touch the database
    assert gates.read_values(no_session, cfg, ["clone_verified"], {"clone_verified": True}) == {
        "clone_verified": True
    }
    with pytest.raises(BadInput, match="unknown counter 'nosuch'") as caught:
        gates.read_values(no_session, cfg, ["nosuch"])
    assert caught.value.file == str(tmp_path / "oneroof.toml")
    assert caught.value.line == 3


def test_normalise_keeps_numbers_exact() -> None:
    assert gates.normalise(Decimal("210")) == 210
    assert isinstance(gates.normalise(Decimal("210")), int)
    assert gates.normalise(Decimal("0.5")) == Decimal("0.5")
    assert gates.normalise(True) is True
    assert gates.normalise(None) is None
