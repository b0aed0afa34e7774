"""How one database of the non-production server is copied into another: reset, golden copy.

`CREATE DATABASE … TEMPLATE` copies a database inside one server. From 15 it has two
strategies: WAL_LOG writes every block to the WAL (cheap for small databases), FILE_COPY
copies the files after a checkpoint. From 18 FILE_COPY copies them by `file_copy_method`:
`copy` reads and writes every byte, `clone` asks the operating system to share them
(`copy_file_range` on Linux, `copyfile` on macOS). Where the file system has reflinks
(XFS with reflink=1, Btrfs, ZFS 2.2 with block cloning, APFS) a clone shares the extents and
takes the same time whatever the size.

On Linux `copy_file_range` also succeeds where the file system has no reflinks — it then
copies in the kernel — so PostgreSQL accepting `clone` proves nothing. Reflinks are detected
here with the `FICLONE` ioctl on two files in the server's data directory, when that
directory is on this machine (the server's own system identifier read from its
`global/pg_control`); else they are not verified, and the output says so.

`[clone] file_copy_method`: `auto` clones where reflinks are detected (and tries `clone` for
large copies on a server that is not local), `clone` always clones, `copy` never does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from oneroof.clone._common import _ident, _sql
from oneroof.config import Config
from oneroof.connect import ServerSession
from oneroof.errors import ConfigError

# Above this size FILE_COPY (copy the files, one checkpoint) beats WAL_LOG (log every block).
FILE_COPY_BYTES = 256 * 1024 * 1024
FICLONE = 0x40049409  # _IOW(0x94, 9, int) in linux/fs.h
STRATEGY_VERSION = 150000
CLONE_VERSION = 180000
# PostgreSQL removes files of this prefix at startup and leaves them out of base backups.
PROBE_PREFIX = "pgsql_tmp_oneroof_reflink_"

DETECTED = "detected"
ABSENT = "not supported"
UNVERIFIED = "not verified"
NOT_CHECKED = "not checked"


@dataclass(frozen=True)
class Reflinks:
    """Whether the data directory's file system shares extents, and how that was learnt."""

    state: str  # DETECTED | ABSENT | UNVERIFIED | NOT_CHECKED
    detail: str

    @property
    def supported(self) -> bool | None:
        return {DETECTED: True, ABSENT: False}.get(self.state)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail}


@dataclass(frozen=True)
class CopyMethod:
    """How a copy is made: the strategy, the file copy method, and what is known of reflinks."""

    strategy: str | None  # WAL_LOG | FILE_COPY | None (before 15: the files, always)
    file_copy_method: str | None  # clone | copy | None (before 18, or WAL_LOG)
    reflinks: Reflinks
    setting: str  # [clone] file_copy_method as configured
    seconds: float = 0.0
    fallback: str | None = None  # why the server refused a clone and the copy was used

    def describe(self) -> str:
        """One line: what the copy did, e.g. 'FILE_COPY, file_copy_method = clone (reflinks
        detected: …)'."""
        if self.strategy is None:
            text = "CREATE DATABASE … TEMPLATE (a file copy, PostgreSQL before 15)"
        elif self.file_copy_method is None:
            text = self.strategy
        else:
            text = f"{self.strategy}, file_copy_method = {self.file_copy_method}"
        if self.file_copy_method == "clone" or self.reflinks.state == DETECTED:
            text += f" (reflinks {self.reflinks.state}: {self.reflinks.detail})"
        if self.fallback:
            text += f"; clone refused by the server ({self.fallback}), copied instead"
        return text

    def with_time(self, seconds: float) -> CopyMethod:
        return CopyMethod(
            self.strategy,
            self.file_copy_method,
            self.reflinks,
            self.setting,
            seconds,
            self.fallback,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "file_copy_method": self.file_copy_method,
            "reflinks": self.reflinks.to_dict(),
            "setting": self.setting,
            "seconds": round(self.seconds, 3),
            "fallback": self.fallback,
            "describe": self.describe(),
        }


def decide(setting: str, version_num: int, size_bytes: int, reflinks: Reflinks) -> CopyMethod:
    """The copy method for a database of `size_bytes` on a server of `version_num` — pure.

    `clone` before 18 is refused (`ConfigError`): the server has no `file_copy_method`.
    """
    if setting == "clone" and version_num < CLONE_VERSION:
        raise ConfigError(
            "clone.file_copy_method: 'clone' needs PostgreSQL 18 on the non-production server "
            f"(it runs {version_num // 10000}); use 'auto' or 'copy'"
        )
    if version_num < STRATEGY_VERSION:
        return CopyMethod(None, None, reflinks, setting)
    large = size_bytes >= FILE_COPY_BYTES
    if version_num < CLONE_VERSION:
        return CopyMethod("FILE_COPY" if large else "WAL_LOG", None, reflinks, setting)
    clone = setting == "clone" or (
        setting == "auto"
        and (reflinks.state == DETECTED or (reflinks.state == UNVERIFIED and large))
    )
    if clone:
        return CopyMethod("FILE_COPY", "clone", reflinks, setting)
    if large:
        # set explicitly: the server's own default may be clone
        return CopyMethod("FILE_COPY", "copy", reflinks, setting)
    return CopyMethod("WAL_LOG", None, reflinks, setting)


def probe_reflinks(directory: Path) -> Reflinks:
    """Try `FICLONE` between two files in `directory` (removed at once): do extents share?"""
    source = target = -1
    names: list[str] = []
    try:
        source, first = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=directory)
        names.append(first)
        os.write(source, b"\0" * 65536)
        os.fsync(source)
        target, second = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=directory)
        names.append(second)
        fcntl.ioctl(target, FICLONE, source)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS):
            return Reflinks(ABSENT, f"FICLONE in {directory}: {os.strerror(exc.errno)}")
        return Reflinks(UNVERIFIED, f"cannot probe {directory}: {exc.strerror or exc}")
    finally:
        for descriptor in (source, target):
            if descriptor >= 0:
                os.close(descriptor)
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(name)
    return Reflinks(DETECTED, f"FICLONE in {directory}")


def local_data_directory(server: ServerSession) -> tuple[Path | None, str]:
    """The server's data directory when it is on this machine, else None and why not.

    The directory is the server's only when its `global/pg_control` starts with the
    server's own system identifier: a path of the same name on another machine is not it.
    """
    try:
        rows = _sql(server, "select current_setting('data_directory')")
    except psycopg.errors.InsufficientPrivilege:
        return None, "the maintenance role may not read data_directory"
    directory = Path(str(rows[0][0]))
    identifier = server.identity.system_identifier
    if identifier.startswith("unknown@"):
        return None, "the server's system identifier cannot be read"
    try:
        with open(directory / "global" / "pg_control", "rb") as control:
            head = control.read(8)
    except OSError as exc:
        return None, f"{directory} is not readable here ({exc.strerror or exc})"
    if len(head) != 8 or str(struct.unpack("<Q", head)[0]) != identifier:
        return None, f"{directory} here is not the server's data directory"
    return directory, ""


def reflinks_of(server: ServerSession) -> Reflinks:
    """What is known of reflinks on the server's data directory (see the module's text)."""
    directory, why_not = local_data_directory(server)
    if directory is None:
        return Reflinks(UNVERIFIED, f"the server is not local: {why_not}")
    return probe_reflinks(directory)


def choose(cfg: Config, server: ServerSession, template: str) -> CopyMethod:
    """The copy method for `template` on this server, per `[clone] file_copy_method`."""
    size = _sql(server, "select pg_catalog.pg_database_size(%s)", (template,))[0][0]
    version = server.identity.server_version_num
    setting = cfg.clone.file_copy_method
    if version >= CLONE_VERSION and setting != "copy":
        reflinks = reflinks_of(server)
    else:
        reflinks = Reflinks(NOT_CHECKED, f"file_copy_method = {setting!r}")
    return decide_configured(cfg, version, int(size or 0), reflinks)


def decide_configured(
    cfg: Config, version_num: int, size_bytes: int, reflinks: Reflinks
) -> CopyMethod:
    """`decide` for the workspace's setting; a refusal names the file and the line."""
    try:
        return decide(cfg.clone.file_copy_method, version_num, size_bytes, reflinks)
    except ConfigError as exc:
        raise ConfigError(
            exc.message, file=cfg.file, line=cfg.line_of("clone", "file_copy_method")
        ) from None


def copy_database(cfg: Config, server: ServerSession, target: str, template: str) -> CopyMethod:
    """`CREATE DATABASE target TEMPLATE template` by the chosen method; returns it, timed."""
    method = choose(cfg, server, template)
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(_ident(target), _ident(template))
    if method.strategy is not None:
        statement += sql.SQL(" STRATEGY {}").format(sql.SQL(method.strategy))
    started = time.perf_counter()
    if method.file_copy_method is None:
        _sql(server, statement)
        return method.with_time(time.perf_counter() - started)
    try:
        _sql(server, sql.SQL("SET file_copy_method = {}").format(sql.SQL(method.file_copy_method)))
        _sql(server, statement)
    except (
        psycopg.errors.InvalidParameterValue,  # a server built without clone support
        psycopg.errors.FeatureNotSupported,
        psycopg.errors.InternalError_,  # "could not clone file": the file system refused
    ) as exc:
        refused = (exc.diag.message_primary or str(exc)).strip()
        if method.file_copy_method != "clone" or (
            isinstance(exc, psycopg.errors.InternalError_) and "clone" not in refused
        ):
            raise
        _sql(server, "SET file_copy_method = copy")
        _sql(server, statement)
        method = CopyMethod(
            method.strategy, "copy", method.reflinks, method.setting, fallback=refused
        )
    finally:
        if not server.closed:
            with contextlib.suppress(psycopg.Error):
                _sql(server, "RESET file_copy_method")
    return method.with_time(time.perf_counter() - started)
