"""Resets by file clone: a non-production server on a loop-mounted XFS image with reflinks.

The copy method is decided by a pure function (tested over its whole input space); the
server tests run PostgreSQL 18 with its data directory on XFS (`mkfs.xfs -m reflink=1`) and
check what the copy did on disk: a reset by clone adds almost nothing to the file system,
a copy adds the database's size. They need root, losetup and mkfs.xfs (`make test-reflink`
installs xfsprogs); elsewhere they skip naming what is missing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fix_clone import clone_name, remove_clone, run_cli, workspace_toml
from oneroof import campaign, clone, config, connect
from oneroof.clone import copying
from oneroof.embedded import EmbeddedServer, XfsVolume
from oneroof.errors import ConfigError
from oneroof.workspace import Workspace as Ws

MISSING = XfsVolume.missing()
needs_volume = pytest.mark.skipif(MISSING is not None, reason=f"no reflink volume: {MISSING}")
DETECTED = copying.Reflinks(copying.DETECTED, "FICLONE in /x")
ABSENT = copying.Reflinks(copying.ABSENT, "FICLONE in /x: Operation not supported")
UNVERIFIED = copying.Reflinks(copying.UNVERIFIED, "the server is not local")
MB = 1024 * 1024


# -- the decision, without a database ------------------------------------------------------------


@given(
    setting=st.sampled_from(["auto", "clone", "copy"]),
    version=st.sampled_from([130000, 140000, 150000, 160000, 170000, 180000, 180006, 190000]),
    size=st.integers(min_value=0, max_value=64 * 1024**3),
    reflinks=st.sampled_from([DETECTED, ABSENT, UNVERIFIED]),
)
def test_the_copy_method_follows_the_setting_the_version_and_the_file_system(
    setting: str, version: int, size: int, reflinks: copying.Reflinks
) -> None:
    if setting == "clone" and version < 180000:
        with pytest.raises(ConfigError, match="needs PostgreSQL 18"):
            copying.decide(setting, version, size, reflinks)
        return
    method = copying.decide(setting, version, size, reflinks)
    large = size >= copying.FILE_COPY_BYTES
    if version < 150000:
        assert method.strategy is None and method.file_copy_method is None
        return
    clones = method.file_copy_method == "clone"
    assert clones == (
        version >= 180000
        and (
            setting == "clone"
            or (setting == "auto" and (reflinks is DETECTED or (reflinks is UNVERIFIED and large)))
        )
    )
    if clones:
        assert method.strategy == "FILE_COPY"
        assert "file_copy_method = clone" in method.describe()
        assert reflinks.state in method.describe()
    else:
        assert method.strategy == ("FILE_COPY" if large else "WAL_LOG")
        # on 18 a FILE_COPY says which method: the server's own default may be clone
        assert method.file_copy_method == ("copy" if large and version >= 180000 else None)


# -- reflinks on real file systems ---------------------------------------------------------------


@pytest.fixture(scope="module")
def volume() -> Iterator[XfsVolume]:
    if MISSING is not None:
        pytest.skip(f"no reflink volume: {MISSING}")
    root = Path(tempfile.mkdtemp(prefix="oneroof-test-xfs-"))
    with XfsVolume(root, 3 * 1024**3) as made:
        yield made
    os.rmdir(made.mount)
    os.rmdir(root)


@pytest.fixture(scope="module")
def xfs_server(volume: XfsVolume) -> Iterator[EmbeddedServer]:
    """A non-production PostgreSQL 18 whose data directory is on the XFS volume."""
    server = EmbeddedServer(volume.mount / "nonprod").start()
    try:
        with connect.open_admin(server.dsn()) as admin:
            admin.execute(
                "do $$ begin create role oneroof_reader login; exception when duplicate_object"
                " then null; end $$"
            )
        yield server
    finally:
        server.remove()


@needs_volume
def test_ficlone_detects_reflinks_where_the_file_system_has_them(
    volume: XfsVolume, tmp_path: Path
) -> None:
    found = copying.probe_reflinks(volume.mount)
    assert found.state == copying.DETECTED and found.supported is True
    assert not [p for p in volume.mount.iterdir() if p.name.startswith(copying.PROBE_PREFIX)]
    with XfsVolume(tmp_path / "plain", 512 * MB, reflink=False) as plain:
        absent = copying.probe_reflinks(plain.mount)
    assert absent.state == copying.ABSENT and absent.supported is False
    assert "Operation not supported" in absent.detail


@pytest.fixture
def xfs_workspace(
    make_workspace: Any,
    prod_server: Any,
    prod_db: str,
    xfs_server: EmbeddedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Any, str]]:
    """A workspace whose non-production server is the XFS one; production holds ~40 MB."""
    with prod_server.admin(prod_db) as conn:
        conn.execute(
            "create table film as select g as id, repeat(md5(g::text), 12) as title"
            " from generate_series(1, 100000) g"
        )
        conn.execute("alter table film add primary key (id)")
    name = clone_name()
    workspace = make_workspace(prod_db, workspace_toml(name).replace("public.film", "film"))
    monkeypatch.setenv("ONEROOF_TEST_NONPROD_DSN", xfs_server.dsn())
    try:
        yield workspace, name
    finally:
        remove_clone(_Admin(xfs_server), name)


class _Admin:
    """The `admin()` of a test server, for the cleanup helpers, on a server started here."""

    def __init__(self, server: EmbeddedServer) -> None:
        self.server = server

    def admin(self, database: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(self.server.dsn(database), autocommit=True)


def _used_bytes(server: EmbeddedServer, path: Path) -> int:
    """Bytes the file system holds, after the server wrote out what it buffered."""
    with connect.open_admin(server.dsn()) as admin:
        admin.execute("checkpoint")
    os.sync()
    stats = os.statvfs(path)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


def _set_method(workspace: Any, value: str) -> None:
    toml = (workspace.path / "oneroof.toml").read_text()
    lines = [line for line in toml.splitlines() if not line.startswith("file_copy_method")]
    text = "\n".join(lines).replace("[clone]\n", f'[clone]\nfile_copy_method = "{value}"\n')
    workspace.write(text + "\n")


@needs_volume
def test_reset_by_clone_shares_the_files_and_says_so(
    xfs_workspace: tuple[Any, str],
    xfs_server: EmbeddedServer,
    volume: XfsVolume,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workspace, name = xfs_workspace
    cfg = workspace.config()
    evidence = workspace.evidence()
    made = clone.create(Ws(cfg, evidence))
    assert made.copy["file_copy_method"] == "clone" and made.copy["strategy"] == "FILE_COPY"
    assert made.copy["reflinks"]["state"] == copying.DETECTED
    with connect.open_admin(xfs_server.dsn()) as admin:
        size = admin.execute("select pg_database_size(%s)", (name,)).fetchone()
    assert size is not None and size[0] > 30 * MB

    before = _used_bytes(xfs_server, volume.mount)
    code, out, _ = run_cli(["--workspace", str(workspace.path), "clone", "reset"], capsys)
    grown = _used_bytes(xfs_server, volume.mount) - before
    assert code == 0
    assert "FILE_COPY, file_copy_method = clone (reflinks detected: FICLONE in" in out
    assert "copied by" in out
    # the copy shares the golden copy's extents: the file system barely grows
    assert grown < size[0] // 4, (grown, size[0])
    marker = clone.read_marker(Ws(cfg), name)
    assert marker is not None and marker["copy"]["file_copy_method"] == "clone"
    assert clone.verify(Ws(cfg, evidence)).ok
    # the report names it too: the campaign keeps the clone it was reset to
    with Ws(cfg, evidence) as ws:
        report = campaign.run(ws).report
    assert "FILE_COPY, file_copy_method = clone (reflinks detected" in report.facts["clone copy"]

    # the same reset by copy writes the whole database again
    _set_method(workspace, "copy")
    cfg = workspace.config()
    before = _used_bytes(xfs_server, volume.mount)
    copied = clone.reset(Ws(cfg, evidence))
    grown_by_copy = _used_bytes(xfs_server, volume.mount) - before
    assert copied.copy["file_copy_method"] != "clone"
    assert copied.copy["strategy"] == "WAL_LOG"  # a small database: WAL_LOG beats FILE_COPY
    assert grown_by_copy > size[0] // 2, (grown_by_copy, size[0])
    assert clone.verify(Ws(cfg, evidence)).ok


@needs_volume
def test_auto_does_not_clone_where_the_file_system_has_no_reflinks(
    make_workspace: Any, prod_db: str, nonprod_server: Any
) -> None:
    """The tests' own non-production server: local; its file system decides, measured."""
    name = clone_name()
    workspace = make_workspace(prod_db, workspace_toml(name))
    cfg = workspace.config()
    with connect.open_server(cfg) as server:
        directory, why_not = copying.local_data_directory(server)
        assert directory is not None, why_not
        expected = copying.probe_reflinks(directory)
        method = copying.choose(cfg, server, "template1")
    assert method.reflinks.state == expected.state
    assert (method.file_copy_method == "clone") == (expected.state == copying.DETECTED)


def test_a_server_oneroof_cannot_look_into_is_not_verified(
    make_workspace: Any, prod_db: str, nonprod_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A maintenance role that may not read data_directory: reflinks are not verified, and
    `auto` clones only what FILE_COPY would copy anyway (large databases)."""
    workspace = make_workspace(prod_db, workspace_toml(clone_name()))
    monkeypatch.setenv("ONEROOF_TEST_NONPROD_DSN", nonprod_server.reader_dsn("postgres"))
    cfg = workspace.config()
    with connect.open_server(cfg) as server:
        found = copying.reflinks_of(server)
        method = copying.choose(cfg, server, "template1")
    assert found.state == copying.UNVERIFIED and "may not read data_directory" in found.detail
    assert method.strategy == "WAL_LOG" and method.file_copy_method is None


def test_clone_on_a_server_before_18_is_bad_input_naming_the_line(tmp_path: Path) -> None:
    text = workspace_toml("x_clone", clone_extra='file_copy_method = "clone"')
    cfg = config.parse(text, tmp_path / "oneroof.toml")
    with pytest.raises(ConfigError, match="needs PostgreSQL 18") as raised:
        copying.decide_configured(cfg, 170000, 0, UNVERIFIED)
    assert raised.value.line == text.splitlines().index('file_copy_method = "clone"') + 1
    assert copying.decide_configured(cfg, 180000, 0, ABSENT).file_copy_method == "clone"
