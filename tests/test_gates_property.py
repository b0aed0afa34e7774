"""Property tests of the gate language.

Random expression trees are rendered to text, parsed and evaluated; the result must equal a
reference evaluation of the tree written here independently (SQL three-valued logic, a
gate holds only when true). Random garbage must parse to a gate or raise `BadInput` —
nothing else, ever.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from oneroof import gates
from oneroof.errors import BadInput

INT_NAMES = ("gap", "ospa", "n", "candidates")
BOOL_NAMES = ("frozen", "ready")
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

# A tree is a tuple: ("int", name|value), ("cmp", [operands], [ops]), ("bool", name|literal),
# ("not", tree), ("and"|"or", [trees]).
int_operand = st.one_of(
    st.tuples(st.just("name"), st.sampled_from(INT_NAMES)),
    st.tuples(st.just("lit"), st.integers(-20, 20)),
)
comparison = st.integers(1, 3).flatmap(
    lambda n: st.tuples(
        st.just("cmp"),
        st.lists(int_operand, min_size=n + 1, max_size=n + 1),
        st.lists(st.sampled_from(sorted(OPS)), min_size=n, max_size=n),
    )
)
boolean = st.tuples(
    st.just("bool"),
    st.one_of(st.sampled_from(BOOL_NAMES), st.sampled_from(("true", "false", "True", "False"))),
)
trees = st.recursive(
    st.one_of(comparison, boolean),
    lambda children: st.one_of(
        st.tuples(st.just("not"), children),
        st.tuples(st.sampled_from(("and", "or")), st.lists(children, min_size=2, max_size=3)),
    ),
    max_leaves=12,
)
values = st.fixed_dictionaries(
    {
        **{name: st.one_of(st.none(), st.integers(-20, 20)) for name in INT_NAMES},
        **{name: st.one_of(st.none(), st.booleans()) for name in BOOL_NAMES},
    }
)


def render(tree: Any, space: Callable[[], str]) -> str:
    kind = tree[0]
    if kind == "cmp":
        operands = [str(v) for _, v in tree[1]]
        text = operands[0]
        for op, operand in zip(tree[2], operands[1:], strict=True):
            text += f"{space()}{op}{space()}{operand}"
        return text
    if kind == "bool":
        return str(tree[1])
    if kind == "not":
        return f"not{space() or ' '}({render(tree[1], space)})"
    joiner = f" {kind} "
    return joiner.join(f"({render(child, space)})" for child in tree[1])


def reference(tree: Any, env: dict[str, Any]) -> bool | None:
    """Kleene three-valued evaluation, written without looking at the implementation."""
    kind = tree[0]
    if kind == "bool":
        literal = {"true": True, "True": True, "false": False, "False": False}
        return literal[tree[1]] if tree[1] in literal else env[tree[1]]
    if kind == "cmp":
        resolved = [env[v] if k == "name" else v for k, v in tree[1]]
        pairs: list[bool | None] = []
        for op, left, right in zip(tree[2], resolved, resolved[1:], strict=False):
            pairs.append(None if left is None or right is None else OPS[op](left, right))
        return kleene_and(pairs)
    if kind == "not":
        inner = reference(tree[1], env)
        return None if inner is None else not inner
    results = [reference(child, env) for child in tree[1]]
    return kleene_and(results) if kind == "and" else kleene_or(results)


def kleene_and(results: list[bool | None]) -> bool | None:
    if False in results:
        return False
    return None if None in results else True


def kleene_or(results: list[bool | None]) -> bool | None:
    if True in results:
        return True
    return None if None in results else False


@settings(max_examples=400, deadline=None)
@given(tree=trees, env=values, spaces=st.lists(st.sampled_from([" ", "  ", "\t"]), min_size=1))
def test_rendered_trees_evaluate_like_the_reference(
    tree: Any, env: dict[str, Any], spaces: list[str]
) -> None:
    cycle = iter(spaces * 200)
    text = render(tree, lambda: next(cycle, " "))
    gate = gates.parse(text, known=[*INT_NAMES, *BOOL_NAMES])
    result = gates.evaluate(gate, env)
    assert result.holds is (reference(tree, env) is True), text
    assert set(result.values) == set(gate.names)


TOKENS = [
    "gap", "ospa", "frozen", "and", "or", "not", "(", ")", "==", "!=", "<", "<=", ">", ">=",
    "=", "1", "-1", "0", "'x'", '"y"', "true", "False", "None", "+", "*", ".", ",", "[", "]",
    "lambda", ":", "if", "else", "is", "in", "f'{gap}'", "1.5", "__import__", "\\", "#",
]  # fmt: skip


def check_garbage(text: str) -> None:
    try:
        gate = gates.parse(text, file="g.sql", line=1)
    except BadInput:
        return
    env = {name: 1 for name in gate.names}
    try:
        result = gates.evaluate(gate, env)
    except BadInput:
        return
    # a gate that holds makes its negation fail (three-valued: both may fail, on NULL)
    negation = gates.evaluate(gates.parse(f"not ({gate.text})", file="g.sql", line=1), env)
    assert not (result.holds and negation.holds), text
    assert gates.evaluate(gate, env).holds == result.holds  # and it is deterministic


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=80))
def test_random_text_is_a_gate_or_bad_input(text: str) -> None:
    check_garbage(text)


@settings(max_examples=500, deadline=None)
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=14))
def test_random_token_soup_is_a_gate_or_bad_input(tokens: list[str]) -> None:
    check_garbage(" ".join(tokens))
