"""One view, one text, whatever major deparsed it; one grant, one ACL item (no database)."""

from __future__ import annotations

import pytest

from oneroof.fingerprint import _acl_item
from oneroof.viewtext import canonical_view

# (what PostgreSQL 15 prints, what 18 prints) for the same view, taken from both servers
SAME_VIEW = [
    (
        " SELECT a.id,\n    a.x\n   FROM vv.a a\n  WHERE (a.x > 1);",
        " SELECT id,\n    x\n   FROM vv.a a\n  WHERE (x > 1);",
    ),
    (
        " SELECT a.id,\n    count(*) AS count\n   FROM vv.a a\n  GROUP BY a.id\n  ORDER BY a.id;",
        " SELECT id,\n    count(*) AS count\n   FROM vv.a a\n  GROUP BY id\n  ORDER BY id;",
    ),
    (
        " SELECT s.id\n   FROM ( SELECT a.id\n           FROM vv.a a) s;",
        " SELECT id\n   FROM ( SELECT a.id\n           FROM vv.a a) s;",
    ),
    (
        " SELECT a.id\n   FROM vv.a a\n  WHERE (EXISTS ( SELECT 1\n           FROM vv.b b\n"
        "          WHERE (b.id = a.id)));",
        " SELECT id\n   FROM vv.a a\n  WHERE (EXISTS ( SELECT 1\n           FROM vv.b b\n"
        "          WHERE (b.id = a.id)));",
    ),
    (
        " WITH c AS (\n         SELECT a.id\n           FROM vv.a a\n        )\n SELECT c.id\n"
        "   FROM c;",
        " WITH c AS (\n         SELECT a.id\n           FROM vv.a a\n        )\n SELECT id\n"
        "   FROM c;",
    ),
    (
        " SELECT a.id,\n    ( SELECT max(b.y) AS max\n           FROM vv.b b\n"
        "          WHERE (b.id = a.id)) AS max\n   FROM vv.a a;",
        " SELECT id,\n    ( SELECT max(b.y) AS max\n           FROM vv.b b\n"
        "          WHERE (b.id = a.id)) AS max\n   FROM vv.a a;",
    ),
    (
        " SELECT a.id\n   FROM vx.a a\n  WHERE (a.id IN ( SELECT b.id\n           FROM vx.b b));",
        " SELECT id\n   FROM vx.a a\n  WHERE (id IN ( SELECT b.id\n           FROM vx.b b));",
    ),
    (
        " SELECT g.n\n   FROM generate_series(1, 3) g(n)\n  WHERE (g.n > 1);",
        " SELECT n\n   FROM generate_series(1, 3) g(n)\n  WHERE (n > 1);",
    ),
    # the same on both: joins, set operations and views without a relation keep their text
    (
        " SELECT a.id,\n    b.y\n   FROM (vv.a a\n     JOIN vv.b b ON ((a.id = b.id)));",
        " SELECT a.id,\n    b.y\n   FROM (vv.a a\n     JOIN vv.b b ON ((a.id = b.id)));",
    ),
    (
        " SELECT a.id\n   FROM vv.a a\nUNION\n SELECT b.id\n   FROM vv.b b;",
        " SELECT a.id\n   FROM vv.a a\nUNION\n SELECT b.id\n   FROM vv.b b;",
    ),
]


@pytest.mark.parametrize(("older", "newer"), SAME_VIEW)
def test_one_view_deparsed_by_15_and_by_18_has_one_canonical_text(older: str, newer: str) -> None:
    assert canonical_view(older) == canonical_view(newer)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        # another column, another condition, another relation: still told apart
        (" SELECT a.id FROM s.a a WHERE (a.x > 1);", " SELECT a.id FROM s.a a WHERE (a.x > 2);"),
        (" SELECT a.id FROM s.a a;", " SELECT a.x FROM s.a a;"),
        (" SELECT a.id FROM s.a a;", " SELECT a.id FROM s.b a;"),
        # the inner query's qualification is its own on every major
        (
            " SELECT id FROM s.a a WHERE EXISTS (SELECT 1 FROM s.b b WHERE b.id = a.id);",
            " SELECT id FROM s.a a WHERE EXISTS (SELECT 1 FROM s.b b WHERE b.id = b.x);",
        ),
    ],
)
def test_views_that_differ_keep_differing(one: str, other: str) -> None:
    assert canonical_view(one) != canonical_view(other)


def test_text_that_does_not_parse_is_kept_as_it_is() -> None:
    assert canonical_view("not sql at all (") == "not sql at all ("


@pytest.mark.parametrize(
    ("item", "kind", "version", "expected"),
    [
        ("postgres=arwdDxt/postgres", "r", 150000, "postgres=ALL/postgres"),
        ("postgres=arwdDxtm/postgres", "r", 180000, "postgres=ALL/postgres"),
        # without MAINTAIN on 17 and later it is not everything
        ("app=arwdDxt/postgres", "r", 170000, "app=arwdDxt/postgres"),
        ("app=a*r*w*d*D*x*t*/postgres", "r", 160000, "app=ALL*/postgres"),
        ("reader=r/postgres", "r", 180000, "reader=r/postgres"),
        ("=r/postgres", "v", 150000, "=r/postgres"),
        ("app=rwU/postgres", "S", 130000, "app=ALL/postgres"),
    ],
)
def test_a_grant_of_everything_reads_all_on_every_major(
    item: str, kind: str, version: int, expected: str
) -> None:
    assert _acl_item(item, kind, version) == expected
