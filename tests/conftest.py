"""Shared fixtures: the PostgreSQL fixture plugin and a workspace builder."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroof import config
from oneroof.evidence import Evidence

pytest_plugins = ("fix_pg", "fix_rollout", "fix_clone", "fix_report", "fix_suite", "fix_served")


@dataclass
class Workspace:
    """A temporary oneroof workspace whose DSNs point at the test servers."""

    path: Path

    def write(self, text: str) -> Path:
        file = self.path / "oneroof.toml"
        file.write_text(textwrap.dedent(text))
        return file

    def config(self) -> config.Config:
        return config.load(self.path)

    def evidence(self) -> Evidence:
        return Evidence(self.config().evidence_path)


BASIC_TOML = """\
[production]
dsn = "env:ONEROOF_TEST_PROD_DSN"
apply_dsn = "env:ONEROOF_TEST_APPLY_DSN"
statement_timeout = "20s"
[clone]
server_dsn = "env:ONEROOF_TEST_NONPROD_DSN"
name = "app_clone"
[guard]
clone_name_pattern = "^[a-z0-9_]+_(clone|nonprod)$"
app_roles = ["app_rw"]
"""


@pytest.fixture
def make_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prod_server, nonprod_server
) -> Iterator[Callable[..., Workspace]]:
    """Build a workspace for a production database name: make_workspace(prod_db, toml=...)."""

    def build(database: str, toml: str = BASIC_TOML) -> Workspace:
        monkeypatch.setenv("ONEROOF_TEST_PROD_DSN", prod_server.reader_dsn(database))
        monkeypatch.setenv("ONEROOF_TEST_APPLY_DSN", prod_server.dsn(database))
        monkeypatch.setenv("ONEROOF_TEST_NONPROD_DSN", nonprod_server.dsn("postgres"))
        workspace = Workspace(tmp_path / "ws")
        workspace.path.mkdir(exist_ok=True)
        workspace.write(toml)
        return workspace

    yield build
