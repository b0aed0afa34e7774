"""Hostile input at the edges: malformed DSNs leak no password, bad bytes get a clear answer,
check files cannot raise production's statement timeout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from oneroof import config, connect
from oneroof.errors import OneroofError
from oneroof.workspace import Workspace as Ws

CLI = [sys.executable, "-c", "from oneroof.cli import main; main()"]
SECRET = "Sup3rS3cret"

# Each form makes libpq quote part of the string it could not read.
MALFORMED = [
    f"host=/nowhere password={SECRET}%zz dbname=app",  # percent-encoding in key=value
    f"postgresql://app:{SECRET}%zz@localhost/app",  # a bad percent-encoded password
    f"postgresql://app:{SECRET}@[::1:5432/app",  # an IPv6 URI error quotes the whole URI
    f"host=/nowhere password={SECRET[:5]} {SECRET[5:]} dbname=app",  # an unquoted space
    f"host=/nowhere password='{SECRET} dbname=app",  # an unterminated quote
    f"postgresql://app:{SECRET}@localhost/app?password={SECRET}&bogus=1",  # a bad parameter
    f"postgresql://app:{SECRET}@localhost:notaport/app",
    f"host=/nowhere port=1 password={SECRET} dbname=app",  # a valid DSN, unreachable
    f"postgresql://app:{SECRET}@/app?host=/nowhere&port=1",
]


def _fragments() -> list[str]:
    return [SECRET, SECRET[:5], SECRET[5:], SECRET + "%zz"]


def _leaks(text: str) -> list[str]:
    return [f for f in _fragments() if f in text]


@pytest.mark.parametrize("dsn", MALFORMED)
def test_a_malformed_dsn_leaks_no_password(dsn: str, tmp_path: Path) -> None:
    (tmp_path / "oneroof.toml").write_text('[production]\ndsn = "env:LEAKY_DSN"\n')
    env = {"LEAKY_DSN": dsn, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for command in (["doctor"], ["sql", "production", "select 1"], ["fingerprint", "production"]):
        result = subprocess.run(
            [*CLI, "--workspace", str(tmp_path), *command],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.startswith("oneroof: ") and "Traceback" not in result.stderr
        assert _leaks(result.stdout + result.stderr) == [], result.stderr
    evidence = tmp_path / ".oneroof" / "evidence.sqlite"
    if evidence.exists():
        assert _leaks(evidence.read_bytes().decode(errors="replace")) == []


@pytest.mark.parametrize("dsn", MALFORMED)
def test_redaction_of_the_dsn_itself_hides_the_password(dsn: str) -> None:
    assert _leaks(config.redact(dsn)) == [], config.redact(dsn)


def test_an_error_raised_in_the_library_carries_no_password(
    tmp_path: Path, monkeypatch: Any
) -> None:
    (tmp_path / "oneroof.toml").write_text('[production]\ndsn = "env:LEAKY_DSN"\n')
    for dsn in MALFORMED:
        monkeypatch.setenv("LEAKY_DSN", dsn)
        cfg = config.load(tmp_path)
        from oneroof.evidence import Evidence

        with pytest.raises(OneroofError) as info:
            connect.open_production(cfg, Evidence(cfg.evidence_path))
        assert _leaks(str(info.value)) == [], str(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__


def test_undecodable_bytes_on_the_command_line_are_refused_and_audited(
    make_workspace: Any, prod_db: str
) -> None:
    workspace = make_workspace(prod_db)
    import os

    env = dict(os.environ)
    result = subprocess.run(
        [*CLI, "--workspace", str(workspace.path), "sql", "production", b"select '\xff\xfe'"],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 3, stderr
    assert "not valid UTF-8" in stderr and "Traceback" not in stderr
    refused = [r for r in workspace.evidence().records("audit") if r.outcome == "refused"]
    assert refused and refused[-1].sql == "select '\\xff\\xfe'"
    assert workspace.evidence().verify() == []


def test_a_check_file_cannot_raise_the_production_timeout(
    make_workspace: Any, prod_db: str, tmp_path: Path
) -> None:
    from oneroof import suite

    workspace = make_workspace(prod_db)
    toml = (workspace.path / "oneroof.toml").read_text()
    workspace.write(toml.replace('statement_timeout = "20s"', 'statement_timeout = "300ms"'))
    checks = tmp_path / "slow.sql"
    checks.write_text(
        "-- check: slow\n-- timeout: 500h\n-- expect: true\n"
        "select count(*) > 0 from generate_series(1, 200000000);\n"
    )
    cfg = workspace.config()
    result = suite.run(Ws(cfg, workspace.evidence()), suite.load([checks]), target="production")
    statuses = [item.status for file in result.files for item in file.items]
    assert statuses == [suite.Status.TIMEOUT]
    sent = [r.sql for r in workspace.evidence().records("audit")]
    assert "SET LOCAL statement_timeout = '300ms'" in sent
    assert not any("1800000000ms" in (s or "") for s in sent)
