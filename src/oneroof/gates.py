"""Gates: the small, safe expression language over named counters (`ospa >= 1 and gap == 0`).

A gate is parsed with Python's `ast` in `eval` mode and then walked against a whitelist of
node types; it is never compiled or evaluated by Python. The language:

- names: counters of `oneroof.toml` (or built-in values the caller supplies, such as
  `clone_verified`); `true`/`false` (and `True`/`False`) are the boolean literals;
- literals: integers (optionally signed), strings in quotes, booleans;
- comparisons `==  !=  <  <=  >  >=`, chained as in `1 <= gap < 10`;
- `and`, `or`, `not`, parentheses.

NULL. A counter whose value is NULL makes every comparison it takes part in *unknown*, and
`and`/`or`/`not` follow SQL's three-valued logic. A gate holds only when its value is true,
so NULL never opens a gate — not even through `not (x == 1)` or `x != 1`.

Types. Numbers compare with numbers, text with text, booleans with booleans (`==`/`!=`
only); comparing across kinds is bad input (exit 2). In a boolean position a number is true
when it is not zero; text is bad input.

Evaluation (`evaluate`) is a pure function of the parsed gate and values already read;
`read_values` is the only function here that talks to a database, through a guarded session.
"""

from __future__ import annotations

import ast
import io
import tokenize
import warnings
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneroof.errors import BadInput
from oneroof.sqltext import json_value, value_text

if TYPE_CHECKING:
    from oneroof.config import Config, Target
    from oneroof.connect import Session

MAX_LENGTH = 4000
MAX_DEPTH = 64
BOOLEAN_NAMES = {"true": True, "false": False, "True": True, "False": False}

_COMPARISONS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_FORBIDDEN_HINTS: dict[type[ast.AST], str] = {
    ast.Call: "function calls",
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.BinOp: "arithmetic",
    ast.IfExp: "conditional expressions",
    ast.Lambda: "lambdas",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.JoinedStr: "f-strings",
    ast.ListComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignments",
    ast.Starred: "starred expressions",
}


@dataclass(frozen=True)
class Gate:
    """A parsed gate: its text, the counter names it reads, and where it was written."""

    text: str
    tree: ast.expr = field(repr=False, compare=False)
    names: tuple[str, ...] = ()
    file: str | None = None
    line: int | None = None

    def error(self, message: str) -> BadInput:
        return BadInput(f"gate {self.text!r}: {message}", file=self.file, line=self.line)


@dataclass(frozen=True)
class GateResult:
    """A gate evaluated on values: whether it holds, and the values it was evaluated on."""

    expression: str
    holds: bool
    values: dict[str, Any]

    def describe(self) -> str:
        """`ospa >= 1: closed (ospa=0)` — the gate, its state and its values."""
        shown = ", ".join(f"{k}={value_text(v)}" for k, v in sorted(self.values.items()))
        state = "open" if self.holds else "closed"
        return f"{self.expression}: {state}" + (f" ({shown})" if shown else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "expression": self.expression,
            "holds": self.holds,
            "values": {k: json_value(v) for k, v in self.values.items()},
        }


# -- parsing ------------------------------------------------------------------------------


def parse(
    text: str,
    *,
    file: Path | str | None = None,
    line: int | None = None,
    known: Collection[str] | None = None,
) -> Gate:
    """Parse and check a gate expression; `BadInput` (with file and line) if it is not one.

    With `known`, every name must be one of them (counters, built-ins).
    """
    where = str(file) if file is not None else None

    def bad(message: str) -> BadInput:
        return BadInput(f"gate {text!r}: {message}", file=where, line=line)

    if not isinstance(text, str):
        raise BadInput("a gate must be text", file=where, line=line)
    source = text.strip()
    if not source:
        raise bad("empty expression")
    if len(source) > MAX_LENGTH:
        raise BadInput(
            f"gate expression longer than {MAX_LENGTH} characters", file=where, line=line
        )
    if "\x00" in source:
        raise bad("contains a NUL character")
    try:
        with warnings.catch_warnings():
            # "invalid escape sequence", "is with a literal": the text is data, not code
            warnings.simplefilter("ignore")
            tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise bad(_syntax_message(source, exc)) from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise bad(f"cannot be read: {type(exc).__name__}") from None
    if _has_comment(source):
        raise bad("'#' starts no comment in a gate: remove it (and what follows)")
    body = tree.body
    names: list[str] = []
    _check(body, source, bad, names)
    unknown = sorted({n for n in names if known is not None and n not in known})
    if unknown:
        choices = ", ".join(sorted(known or ())) or "none defined"
        raise bad(f"unknown name(s) {', '.join(unknown)} (known counters: {choices})")
    return Gate(source, body, tuple(sorted(set(names))), where, line)


def _has_comment(source: str) -> bool:
    """True when Python's tokenizer would drop part of the text as a `#` comment."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return "#" in source
    return any(token.type == tokenize.COMMENT for token in tokens)


def _syntax_message(source: str, exc: SyntaxError) -> str:
    stripped = source.replace("==", "").replace("!=", "").replace("<=", "").replace(">=", "")
    if "=" in stripped:
        return "use == to compare (a single = is not an operator here)"
    if "&&" in source or "||" in source:
        return "use and / or instead of && / ||"
    if "<>" in source:
        return "use != instead of <>"
    where = f" at column {exc.offset}" if exc.offset else ""
    return f"not a valid expression{where}: {exc.msg}"


def _column(source: str, node: ast.AST) -> str:
    offset = getattr(node, "col_offset", None)
    if offset is None:
        return ""
    # ast columns count UTF-8 bytes; report characters.
    column = len(source.encode()[:offset].decode(errors="ignore")) + 1
    return f" at column {column}"


def _check(node: ast.AST, source: str, bad: Any, names: list[str]) -> None:
    """Walk the tree (iteratively, depth-limited); raise `bad(...)` at the first stranger."""
    stack: list[tuple[ast.AST, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise bad(f"nested deeper than {MAX_DEPTH} levels")
        children: list[ast.AST] = []
        if isinstance(current, ast.BoolOp):
            if not isinstance(current.op, ast.And | ast.Or):
                raise bad("unsupported boolean operator")
            children = list(current.values)
        elif isinstance(current, ast.UnaryOp):
            if isinstance(current.op, ast.Not):
                children = [current.operand]
            elif isinstance(current.op, ast.USub | ast.UAdd):
                operand = current.operand
                if not (isinstance(operand, ast.Constant) and type(operand.value) is int):
                    raise bad(
                        f"a sign applies to an integer literal only{_column(source, current)}"
                    )
                continue
            else:
                raise bad(f"unsupported operator ~{_column(source, current)}")
        elif isinstance(current, ast.Compare):
            for op in current.ops:
                if type(op) not in _COMPARISONS:
                    label = {ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
                    raise bad(
                        f"unsupported comparison {label.get(type(op), type(op).__name__)!r}"
                        f"{_column(source, current)} (use == != < <= > >=)"
                    )
            children = [current.left, *current.comparators]
        elif isinstance(current, ast.Constant):
            value = current.value
            if isinstance(value, bool) or type(value) in (int, str):
                continue
            if isinstance(value, float):
                raise bad(f"only integer numbers are supported{_column(source, current)}")
            raise bad(f"unsupported literal {value!r}{_column(source, current)}")
        elif isinstance(current, ast.Name):
            if current.id not in BOOLEAN_NAMES:
                names.append(current.id)
            continue
        else:
            what = next(
                (hint for kind, hint in _FORBIDDEN_HINTS.items() if isinstance(current, kind)),
                type(current).__name__,
            )
            raise bad(f"not supported: {what}{_column(source, current)}")
        stack.extend((child, depth + 1) for child in reversed(children))


# -- evaluation ---------------------------------------------------------------------------


def evaluate(gate: Gate, values: Mapping[str, Any]) -> GateResult:
    """Evaluate `gate` on `values` (name → value); every name of the gate must be present."""
    missing = [name for name in gate.names if name not in values]
    if missing:
        raise gate.error(f"no value for {', '.join(missing)}")
    used = {name: values[name] for name in gate.names}
    truth = _truth(gate.tree, used, gate)
    return GateResult(gate.text, truth is True, used)


def evaluate_all(gates: Iterable[Gate], values: Mapping[str, Any]) -> list[GateResult]:
    return [evaluate(gate, values) for gate in gates]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def _truth(node: ast.expr, values: Mapping[str, Any], gate: Gate) -> bool | None:
    """The three-valued truth of `node`: True, False or None (unknown)."""
    if isinstance(node, ast.BoolOp):
        results = [_truth(child, values, gate) for child in node.values]
        if isinstance(node.op, ast.And):
            if any(r is False for r in results):
                return False
            return None if any(r is None for r in results) else True
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _truth(node.operand, values, gate)
        return None if inner is None else not inner
    if isinstance(node, ast.Compare):
        return _compare(node, values, gate)
    value = _value(node, values, gate)
    return _as_truth(value, gate)


def _as_truth(value: Any, gate: Gate) -> bool | None:
    kind = _kind(value)
    if kind == "null":
        return None
    if kind == "boolean":
        return bool(value)
    if kind == "number":
        return bool(value != 0)
    raise gate.error(f"{kind} value {value!r} is not a truth value (compare it with ==)")


def _value(node: ast.expr, values: Mapping[str, Any], gate: Gate) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in BOOLEAN_NAMES:
            return BOOLEAN_NAMES[node.id]
        return values[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        number = _value(node.operand, values, gate)
        return -number if isinstance(node.op, ast.USub) else number
    # a boolean sub-expression used as an operand: its truth value
    return _truth(node, values, gate)


def _compare(node: ast.Compare, values: Mapping[str, Any], gate: Gate) -> bool | None:
    left = _value(node.left, values, gate)
    result: bool | None = True
    for op, comparator in zip(node.ops, node.comparators, strict=True):
        right = _value(comparator, values, gate)
        step = _compare_pair(left, _COMPARISONS[type(op)], right, gate)
        if step is False:
            return False
        if step is None:
            result = None
        left = right
    return result


def _compare_pair(left: Any, op: str, right: Any, gate: Gate) -> bool | None:
    left_kind, right_kind = _kind(left), _kind(right)
    if left_kind == "null" or right_kind == "null":
        return None
    if left_kind != right_kind:
        raise gate.error(
            f"cannot compare {left_kind} {value_text(left)} with {right_kind} {value_text(right)}"
        )
    if left_kind == "boolean" and op not in ("==", "!="):
        raise gate.error(f"booleans compare only with == and != (not {op})")
    if left_kind not in ("number", "text", "boolean"):
        raise gate.error(f"cannot compare values of type {left_kind}")
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


# -- values from a database ---------------------------------------------------------------


def normalise(value: Any) -> Any:
    """A counter's value as gates compare it: integral numerics become int, others stay."""
    if isinstance(value, Decimal) and value.is_finite():
        return int(value) if value == value.to_integral_value() else value
    return json_value(value)


# Values a target gate may use that are not counters: the campaign supplies them.
# `approved`: every plan an objective names has its quorum of signatures (oneroof.approvals).
TARGET_BUILTINS = ("clone_verified", "approved")


def read_values(
    session: Session,
    cfg: Config,
    names: Iterable[str],
    builtins: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The value of each name: a built-in the caller supplies, else the counter read through
    `session` (on production: the guard). All counters come from one snapshot when this opens
    the transaction; inside an open one they are read in it.
    """
    wanted = sorted(set(names))
    supplied = dict(builtins or {})
    result: dict[str, Any] = {}
    queries: dict[str, str] = {}
    for name in wanted:
        if name in supplied:
            result[name] = supplied[name]
        elif name in cfg.counters:
            queries[name] = cfg.counters[name]
        else:
            raise BadInput(
                f"unknown counter {name!r}: define it in [counters]",
                file=cfg.file,
                line=cfg.line_of("counters"),
            )
    if not queries:
        return result
    if session.in_transaction:
        for name, query in queries.items():
            result[name] = _read_counter(session, cfg, name, query)
        return result
    with session.transaction(consistent=True):
        for name, query in queries.items():
            result[name] = _read_counter(session, cfg, name, query)
    return result


def _read_counter(session: Session, cfg: Config, name: str, query: str) -> Any:
    """One counter's value; a counter that cannot be one is bad input naming its line."""
    return normalise(read_counter(session, name, query, cfg.file, cfg.line_of("counters", name)))


def read_counter(
    session: Session, name: str, query: str, file: Path | None = None, line: int | None = None
) -> Any:
    """The raw value of one counter; one that cannot be (not a plain read, not one value, an
    unknown name) is bad input naming the counter and, where known, its file and line."""
    import psycopg

    from oneroof.errors import DatabaseError, ForbiddenAction, pg_message

    try:
        return session.scalar(query)
    except ForbiddenAction as exc:
        raise BadInput(
            f"counter {name!r} is not a plain read: {exc.reason}", file=file, line=line
        ) from None
    except DatabaseError as exc:  # not one row of one column
        raise BadInput(
            f"counter {name!r}: {exc} (a counter returns one value)", file=file, line=line
        ) from None
    except (
        psycopg.errors.UndefinedTable,
        psycopg.errors.UndefinedColumn,
        psycopg.errors.UndefinedFunction,
        psycopg.errors.SyntaxError,
    ) as exc:
        raise BadInput(f"counter {name!r}: {pg_message(exc)}", file=file, line=line) from None


def target_gates(cfg: Config) -> list[tuple[Target, Gate]]:
    """Every `[[target]]` with its parsed gate; `BadInput` naming the line of a bad one."""
    known = [*cfg.counters, *TARGET_BUILTINS]
    return [
        (
            target,
            parse(
                target.gate,
                file=cfg.file,
                line=cfg.line_of("target", index, "gate"),
                known=known,
            ),
        )
        for index, target in enumerate(cfg.targets)
    ]


def evaluate_targets(
    targets: Iterable[tuple[Target, Gate]], values: Mapping[str, Any]
) -> list[tuple[Target, GateResult]]:
    """Each target's gate evaluated on the values read (a pure function)."""
    return [(target, evaluate(gate, values)) for target, gate in targets]
