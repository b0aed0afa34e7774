"""External clone engines and adopted clones: oneroof drives them and adopts what they make.

A small engine script plays DBLab or a snapshot script: it copies a seed database of the
non-production server with `createdb -T` and prints the new database's DSN. A physical copy
of production (`pg_basebackup`, then promoted) is adopted with `oneroof clone adopt`: it
has production's system identifier, and is accepted because it is another server, while
production itself, another database of production's server and a standby are refused.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fix_clone import clone_name, primary_and_standby, remove_clone, run_cli, workspace_toml
from fix_pg import Server
from oneroof import campaign, clone, config, connect, fingerprint, roles
from oneroof.clone import engines
from oneroof.embedded import EmbeddedServer, bin_dir
from oneroof.errors import BadInput, ConfigError, DatabaseError
from oneroof.workspace import Workspace as Ws

ENGINE = textwrap.dedent(
    """\
    # A clone engine for the tests: copies the seed database, prints the copy's DSN.
    import os, subprocess, sys
    action, name = sys.argv[1], sys.argv[2]
    server = dict(p.split("=", 1) for p in os.environ["ENGINE_SERVER"].split())
    bin_dir, seed = os.environ["ENGINE_BIN"], os.environ["ENGINE_SEED"]
    target = name + "_db"
    where = ["-h", server["host"], "-p", server["port"], "-U", server["user"]]
    if os.environ.get("ENGINE_FAIL"):
        print("engine: out of snapshots", file=sys.stderr)
        sys.exit(4)
    if action in ("drop", "reset"):
        subprocess.run([bin_dir + "/dropdb", *where, "--if-exists", "--force", target], check=True)
    if action in ("create", "reset"):
        subprocess.run([bin_dir + "/createdb", *where, "-T", seed, target], check=True)
    if action == "reset" and os.environ.get("ENGINE_RESET_PRINTS"):
        print(os.environ["ENGINE_RESET_PRINTS"])
    if action == "create":
        print("copying… done")
        print(f"host={server['host']} port={server['port']} user={server['user']} dbname={target}")
    """
)


# -- what engines print (pure) --------------------------------------------------------------------


def test_the_dsn_is_the_last_line_or_the_one_in_json() -> None:
    assert engines.dsn_from_output("cloning\nhost=/s port=6000 dbname=x\n") == (
        "host=/s port=6000 dbname=x"
    )
    dblab = {"id": "c1", "db": {"connStr": "host=h port=6001 user=u dbname=app"}}
    assert engines.dsn_from_output(json.dumps(dblab)) == "host=h port=6001 user=u dbname=app"
    neon = {"branch": {"id": "br-1"}, "connection_uris": [{"connection_uri": "postgres://u@h/d"}]}
    assert engines.dsn_from_output(json.dumps(neon)) == "postgres://u@h/d"
    assert engines.dsn_from_output("  \n") is None
    with pytest.raises(BadInput, match="JSON without a DSN"):
        engines.dsn_from_output('{"id": "c1"}')
    assert engines.substitute(["x", "--id={name}", "{name}"], "a_clone") == [
        "x",
        "--id=a_clone",
        "a_clone",
    ]


def _print(tables: dict[str, int], taken_at: str = "t") -> fingerprint.Fingerprint:
    sections: dict[str, Any] = {"schema": {}, "counts": tables}
    digests = {k: fingerprint._digest(v) for k, v in sections.items()}
    return fingerprint.Fingerprint(
        "counts", sections, digests, fingerprint.fingerprint_id(digests), taken_at=taken_at
    )


def test_the_comparison_names_the_production_state_the_clone_came_from() -> None:
    then, now = _print({"t": 1}, "monday"), _print({"t": 2}, "tuesday")
    equal = engines.compare(now, now, [])
    assert equal.equal and equal.differences == 0 and "equals production's" in equal.describe()
    older = engines.compare(then, now, [("exit", _print({"t": 9})), ("entry", then)])
    assert not older.equal and older.differences == 1
    assert older.came_from == {"label": "entry", "fingerprint": then.id, "taken_at": "monday"}
    assert "counts: t changed: 2 → 1" in older.describe()
    unknown = engines.compare(_print({"t": 5}), now, [("entry", then)])
    assert unknown.came_from is None and "equals no fingerprint" in unknown.describe()


def test_the_command_method_needs_a_create_command(tmp_path: Path) -> None:
    text = workspace_toml("x_clone", clone_extra='method = "command"')
    with pytest.raises(ConfigError, match=r"needs clone\.create_command") as raised:
        config.parse(text, tmp_path / "oneroof.toml")
    assert raised.value.line == text.splitlines().index('method = "command"') + 1


# -- an engine that copies with createdb -T -------------------------------------------------------


@pytest.fixture
def seed(prod_server: Server, prod_db: str, nonprod_server: Server) -> Iterator[str]:
    """Production's data, copied onto the non-production server once: the engine's source."""
    with prod_server.admin(prod_db) as conn:
        conn.execute(
            "create table film as select g as id, 'film ' || g as title"
            " from generate_series(1, 300) g"
        )
        conn.execute("alter table film add primary key (id)")
        conn.execute("create table leases (job text primary key)")
        conn.execute("insert into leases values ('job:1')")
    name = nonprod_server.create_database("seed")
    dump = subprocess.run(
        [str(bin_dir() / "pg_dump"), "-Fc", "-d", prod_server.dsn(prod_db)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [str(bin_dir() / "pg_restore"), "--no-owner", "-d", nonprod_server.dsn(name)],
        input=dump.stdout,
        check=True,
        capture_output=True,
    )
    try:
        yield name
    finally:
        nonprod_server.drop_database(name)


@pytest.fixture
def engine_ws(
    make_workspace: Any,
    prod_db: str,
    seed: str,
    nonprod_server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Any, str]]:
    script = tmp_path / "engine.py"
    script.write_text(ENGINE)
    name = clone_name()
    argv = [sys.executable, str(script)]
    extra = (
        'method = "command"\n'
        f"create_command = {json.dumps([*argv, 'create', '{name}'])}\n"
        f"reset_command = {json.dumps([*argv, 'reset', '{name}'])}\n"
        f"drop_command = {json.dumps([*argv, 'drop', '{name}'])}\n"
    )
    rest = '[isolation]\nreset_sql = ["delete from public.leases"]\n'
    workspace = make_workspace(prod_db, workspace_toml(name, clone_extra=extra, rest=rest))
    monkeypatch.setenv("ENGINE_SERVER", nonprod_server.dsn("postgres"))
    monkeypatch.setenv("ENGINE_BIN", str(bin_dir()))
    monkeypatch.setenv("ENGINE_SEED", seed)
    try:
        yield workspace, name
    finally:
        nonprod_server.drop_database(f"{name}_db")


def _exists(server: Server, database: str) -> bool:
    with server.admin() as conn:
        return (
            conn.execute("select from pg_database where datname = %s", (database,)).fetchone()
            is not None
        )


def test_an_engine_makes_the_clone_and_oneroof_adopts_checks_and_resets_it(
    engine_ws: tuple[Any, str],
    prod_server: Server,
    prod_db: str,
    nonprod_server: Server,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workspace, name = engine_ws
    cfg = workspace.config()
    evidence = workspace.evidence()
    made = clone.create(Ws(cfg, evidence))
    database = f"{name}_db"
    assert made.method == "command" and made.marker["database"] == database
    assert made.marker["state"] == "ready" and made.marker["name"] == name
    assert made.marker["production"]["equal"] is True, made.marker["production"]
    assert made.marker["physical_copy"] is False
    assert made.marker["isolation"]["revoked_connect"][0] == "PUBLIC"
    assert set(made.marker["isolation"]["reset_tables"]) == {"public.leases"}
    assert "engine" in made.phases
    registry = cfg.state_dir / "clones" / f"{name}.json"
    assert stat.S_IMODE(registry.stat().st_mode) == 0o600
    assert not [r for r in evidence.records("audit") if "pg_dump" in (r.sql or "")]

    result = clone.verify(Ws(cfg, evidence))
    assert result.ok, result.reasons
    listed = {e.name: e for e in clone.list_clones(Ws(cfg))}
    assert listed[name].state == "ready" and listed[name].marker["database"] == database
    # the campaign's entry fingerprint is production's, taken at the adoption
    entry = clone.entry_fingerprint(Ws(cfg, evidence))
    assert entry.id == made.marker["production"]["fingerprint"]
    assert entry.identity["port"] == connect.production_identity(cfg, evidence).port

    # a change on the clone shows; the engine's reset brings the copy back
    with nonprod_server.admin(database) as conn:
        conn.execute("update film set title = 'x' where id = 1")
    assert {p.name for p in clone.verify(Ws(cfg, evidence)).points if not p.ok} == {
        "committed_state"
    }
    code, out, _ = run_cli(["--workspace", str(workspace.path), "clone", "reset"], capsys)
    assert code == 0 and "reset" in out
    assert clone.verify(Ws(cfg, evidence)).ok

    # production moves on: the engine's copy is of the state before, and the marker says so
    with prod_server.admin(prod_db) as conn:
        conn.execute("insert into film values (301, 'film 301')")
    again = clone.reset(Ws(cfg, evidence))
    compared = again.marker["production"]
    assert compared["equal"] is False and compared["differences"] >= 1
    assert compared["came_from"]["fingerprint"] == made.marker["production"]["fingerprint"]
    assert compared["came_from"]["label"] == f"adopt-production:{name}"
    assert any("equals production's adopt-production" in n for n in again.notes)

    dropped = clone.drop(Ws(cfg, evidence))
    assert dropped.dropped == [name]
    assert not _exists(nonprod_server, database) and not registry.exists()
    assert name not in {e.name for e in clone.list_clones(Ws(cfg))}


def test_a_campaign_makes_the_clone_with_the_engine(engine_ws: tuple[Any, str]) -> None:
    workspace, name = engine_ws
    with Ws(workspace.config(), workspace.evidence()) as ws:
        measured = campaign.measure(ws)
        marker = clone.read_marker(ws, name)
    assert measured.clone_created and measured.isolation_after.ok, measured.isolation_after
    assert marker is not None and marker["method"] == "command"
    assert measured.entry.id == marker["production"]["fingerprint"]
    assert measured.entry.identity["database"] == ws.production_identity.database
    assert measured.entry.id == measured.exit.id
    assert measured.golden is not None and measured.golden.startswith("the engine (")
    assert measured.dump_sessions == 0
    assert not measured.isolation_facts["production_cluster"]


def test_a_failing_engine_is_named_and_nothing_is_adopted(
    engine_ws: tuple[Any, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace, name = engine_ws
    monkeypatch.setenv("ENGINE_FAIL", "1")
    cfg = workspace.config()
    with pytest.raises(DatabaseError, match=r"create_command failed \(exit code 4\): engine: out"):
        clone.create(Ws(cfg, workspace.evidence()))
    assert not (cfg.state_dir / "clones" / f"{name}.json").exists()
    toml = (workspace.path / "oneroof.toml").read_text()
    workspace.write(toml.replace(f'["{sys.executable}"', '["/nonexistent/engine"', 1))
    code, _, err = run_cli(["--workspace", str(workspace.path), "clone", "create"], capsys)
    assert code == 2 and "no program '/nonexistent/engine'" in err and "Traceback" not in err


def test_a_reset_whose_engine_prints_garbage_keeps_the_clone_known(
    engine_ws: tuple[Any, str],
    nonprod_server: Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workspace, name = engine_ws
    base = ["--workspace", str(workspace.path), "clone"]
    assert run_cli([*base, "create"], capsys)[0] == 0
    monkeypatch.setenv("ENGINE_RESET_PRINTS", "%%% this is not a dsn ~~~")
    code, _, err = run_cli([*base, "reset"], capsys)
    assert code == 2 and "Traceback" not in err, err
    # still the workspace's: dropped with its engine, not orphaned on the server
    code, _, err = run_cli([*base, "drop"], capsys)
    assert code == 0, err
    assert not _exists(nonprod_server, f"{name}_db")


def test_an_engine_that_returns_production_is_refused_and_nothing_is_marked(
    make_workspace: Any,
    prod_server: Server,
    prod_db: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An engine misconfigured to hand back production itself (here with the superuser's
    DSN, another address form than the reader's) is production's own server: exit 3."""
    with prod_server.admin(prod_db) as conn:
        conn.execute("create table film (id int primary key)")
    name = clone_name()
    printer = [sys.executable, "-c", "import os; print(os.environ['ENGINE_PRINTS'])"]
    extra = f'method = "command"\ncreate_command = {json.dumps(printer)}\n'
    workspace = make_workspace(prod_db, workspace_toml(name, clone_extra=extra))
    monkeypatch.setenv("ENGINE_PRINTS", prod_server.dsn(prod_db))
    code, _, err = run_cli(["--workspace", str(workspace.path), "clone", "create"], capsys)
    assert code == 3 and "production's own server" in err, err
    cfg = workspace.config()
    assert not (cfg.state_dir / "clones" / f"{name}.json").exists()
    with prod_server.admin(prod_db) as conn:
        comment = conn.execute(
            "select shobj_description(oid, 'pg_database') from pg_database"
            " where datname = current_database()"
        ).fetchone()
    assert comment == (None,)  # production was not marked


@pytest.mark.parametrize("prints", ["maintenance", "bytes"])
def test_an_engine_that_prints_the_server_s_own_database_or_bytes_is_refused_in_one_line(
    make_workspace: Any,
    prod_db: str,
    nonprod_server: Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    prints: str,
) -> None:
    name = clone_name()
    if prints == "maintenance":
        printer = [sys.executable, "-c", "import os; print(os.environ['ENGINE_PRINTS'])"]
        monkeypatch.setenv("ENGINE_PRINTS", nonprod_server.dsn("postgres"))
    else:
        printer = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(bytes(range(256)))"]
    extra = f'method = "command"\ncreate_command = {json.dumps(printer)}\n'
    workspace = make_workspace(prod_db, workspace_toml(name, clone_extra=extra))
    code, _, err = run_cli(["--workspace", str(workspace.path), "clone", "create"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("oneroof:")]
    assert code in (2, 3) and "Traceback" not in err and len(errors) == 1, err
    if prints == "maintenance":
        assert code == 3 and "the server's own database" in err
        with psycopg.connect(nonprod_server.dsn("postgres"), autocommit=True) as conn:
            comment = conn.execute(
                "select shobj_description(oid, 'pg_database') from pg_database"
                " where datname = 'postgres'"
            ).fetchone()
        assert comment is not None and "oneroof_clone" not in str(comment[0])  # not marked


def test_an_engine_that_is_not_a_program_is_bad_input_in_one_line(
    make_workspace: Any, prod_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "engine.sh"
    script.write_text("#!/bin/sh\necho hi\n")  # not executable
    for program in (script, tmp_path):
        extra = f'method = "command"\ncreate_command = {json.dumps([str(program)])}\n'
        workspace = make_workspace(prod_db, workspace_toml(clone_name(), clone_extra=extra))
        code, _, err = run_cli(["--workspace", str(workspace.path), "clone", "create"], capsys)
        assert code == 2 and "cannot run" in err and "Traceback" not in err, err
        assert "oneroof.toml:" in err


# -- adopting: production is refused, a physical copy of it is not --------------------------------


@pytest.fixture(scope="module")
def physical() -> Iterator[tuple[EmbeddedServer, EmbeddedServer]]:
    """A production of its own, and its standby (made by pg_basebackup -R, not promoted)."""

    def build(conn: psycopg.Connection[Any]) -> None:
        conn.execute("create table film as select g as id from generate_series(1, 100) g")

    with primary_and_standby("oneroof-test-physical-", build) as made:
        yield made


def test_adopt_refuses_production_and_its_standby_and_takes_a_physical_copy(
    physical: tuple[EmbeddedServer, EmbeddedServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    primary, copy = physical
    name = clone_name()
    ws_dir = tmp_path / "ws"
    ws_dir.mkdir()
    (ws_dir / "oneroof.toml").write_text(
        workspace_toml(name).replace('server_dsn = "env:ONEROOF_TEST_NONPROD_DSN"\n', "")
    )
    monkeypatch.setenv("ONEROOF_TEST_PROD_DSN", primary.dsn("app", user=roles.READER_ROLE))
    monkeypatch.setenv("ONEROOF_TEST_APPLY_DSN", primary.dsn("app"))
    base = ["--workspace", str(ws_dir), "clone", "adopt"]

    # production itself, through another address form: the same running server
    code, _, err = run_cli([*base, primary.dsn("app")], capsys)
    assert code == 3 and "production's own server" in err
    # another database of production's server
    code, _, err = run_cli([*base, primary.dsn("postgres")], capsys)
    assert code == 3 and "allow_production_cluster" in err
    # production again, by a role that cannot read its identifier, through a symlinked
    # socket directory: an address that differs proves nothing, the start instant decides
    with psycopg.connect(primary.dsn("app"), autocommit=True) as conn:
        conn.execute("create role app_owner login")
        conn.execute("revoke execute on function pg_control_system() from public")
    link = Path(tempfile.mkdtemp(prefix="oneroof-link-")) / "s"
    link.symlink_to(primary.socket_dir)
    hidden = f"host={link} port={primary.port} user=app_owner dbname=app"
    code, _, err = run_cli([*base, hidden], capsys)
    assert code == 3 and "production's own server" in err, err
    # production's standby: it shares production's identity and cannot be written
    code, _, err = run_cli([*base, copy.dsn("app")], capsys)
    assert code == 3 and "in recovery" in err
    assert not (ws_dir / ".oneroof" / "clones").exists() or not list(
        (ws_dir / ".oneroof" / "clones").iterdir()
    )

    # promoted, the standby is a physical copy: production's identifier, another server
    copy.promote()
    with psycopg.connect(copy.dsn("app"), autocommit=True) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (False,)
    monkeypatch.setenv("COPY_DSN", copy.dsn("app"))
    code, out, err = run_cli([*base, "env:COPY_DSN", "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    marker = info["marker"]
    assert info["action"] == "adopt" and marker["method"] == "adopted"
    assert marker["physical_copy"] is True and marker["database"] == "app"
    assert marker["production"]["equal"] is True
    assert marker["wal"]["timeline"] >= 2  # promoted: a timeline of its own
    assert "password" not in json.dumps(marker)

    cfg = config.load(ws_dir)
    evidence = Ws(cfg).evidence
    assert clone.verify(Ws(cfg, evidence)).ok
    # a write to the copy is a write to the clone, never to production
    with Ws(cfg, evidence).clone(name) as session:
        session.raw_for_clone.execute("insert into film values (101)")
    with psycopg.connect(primary.dsn("app"), autocommit=True) as conn:
        assert conn.execute("select count(*) from film").fetchone() == (100,)
    with pytest.raises(BadInput, match="cannot reset a database it did not make"):
        clone.reset(Ws(cfg, evidence))
    # letting go of an adopted clone keeps the database, without our marker
    clone.drop(Ws(cfg, evidence))
    with psycopg.connect(copy.dsn("app"), autocommit=True) as conn:
        comment = conn.execute(
            "select shobj_description(oid, 'pg_database') from pg_database where datname = 'app'"
        ).fetchone()
    assert comment == (None,)


def test_the_name_of_a_clone_of_the_nonprod_server_is_not_taken_by_adopt(
    make_workspace: Any,
    prod_server: Server,
    prod_db: str,
    nonprod_server: Server,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Adopting under the name of a ready clone of the non-production server is refused."""
    with prod_server.admin(prod_db) as conn:
        conn.execute("create table film (id int primary key)")
    name = clone_name()
    workspace = make_workspace(prod_db, workspace_toml(name))
    cfg = workspace.config()
    try:
        clone.create(Ws(cfg, workspace.evidence()))
        other = nonprod_server.create_database("other")
        try:
            code, _, err = run_cli(
                ["--workspace", str(workspace.path), "clone", "adopt", nonprod_server.dsn(other)],
                capsys,
            )
        finally:
            nonprod_server.drop_database(other)
        assert code == 2 and "exists on the non-production server" in err
    finally:
        remove_clone(nonprod_server, name)
