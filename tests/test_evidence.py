"""The evidence store's hash chain detects every kind of tampering and names the record."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from oneroof.evidence import Evidence


@pytest.fixture
def store(tmp_path: Path) -> Evidence:
    evidence = Evidence(tmp_path / "evidence.sqlite")
    for index in range(1, 6):
        evidence.audit("production", "read", f"select {index}", "sent")
    return evidence


def tamper(store: Evidence, statement: str, *params: object) -> None:
    db = sqlite3.connect(store.path)
    db.execute(statement, params)
    db.commit()
    db.close()


def test_intact_chain_verifies(store: Evidence) -> None:
    assert store.verify() == []
    assert [r.seq for r in store.records()] == [1, 2, 3, 4, 5]


def test_edited_record_is_named(store: Evidence) -> None:
    tamper(store, "update records set sql = 'select 42' where seq = 3")
    problems = store.verify()
    assert any(p.startswith("record 3: edited") for p in problems), problems


def test_deleted_record_is_named(store: Evidence) -> None:
    tamper(store, "delete from records where seq = 2")
    problems = store.verify()
    assert any("record 2: deleted" in p for p in problems), problems


def test_deleted_last_record_is_named(store: Evidence) -> None:
    tamper(store, "delete from records where seq = 5")
    problems = store.verify()
    assert any("5–5: deleted from the end" in p for p in problems), problems


def test_reordered_records_are_named(store: Evidence) -> None:
    """Records 2 and 3 swap places: each position now holds the other's content."""
    db = sqlite3.connect(store.path)
    two, three = db.execute("select * from records where seq in (2, 3) order by seq").fetchall()
    db.execute("delete from records where seq in (2, 3)")
    db.execute("insert into records values (?,?,?,?,?,?,?,?,?,?)", (2, *three[1:]))
    db.execute("insert into records values (?,?,?,?,?,?,?,?,?,?)", (3, *two[1:]))
    db.commit()
    db.close()
    problems = store.verify()
    assert any(p.startswith("record 2:") for p in problems), problems
    assert any(p.startswith("record 3:") for p in problems), problems


def test_inserted_record_is_named(store: Evidence) -> None:
    db = sqlite3.connect(store.path)
    row = list(db.execute("select * from records where seq = 3").fetchone())
    db.execute("update records set seq = seq + 10 where seq > 3")
    row[0] = 4
    row[6] = "delete from accounts"
    db.execute("insert into records values (?,?,?,?,?,?,?,?,?,?)", row)
    db.commit()
    db.close()
    problems = store.verify()
    assert any(p.startswith("record 4") for p in problems), problems


def test_appends_continue_the_chain_across_instances(store: Evidence, tmp_path: Path) -> None:
    again = Evidence(tmp_path / "evidence.sqlite")
    again.append("fingerprint", {"id": "abc"})
    assert again.verify() == []
    assert again.latest("fingerprint") is not None
    assert again.last_seq() == 6
