"""Fixture plugin: a workspace whose evidence store a real campaign filled, and `oneroof serve`.

`campaign_workspace` runs the ratified demo once per test session (per xdist worker): two
embedded servers, the whole campaign, the signatures, the gated apply and a second campaign,
so the store holds two reports and a record of every kind. `serve()` starts the real
command on it — uvicorn on a port the kernel picked (`--port 0`), read from its first line.
"""

from __future__ import annotations

import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from fix_report import demo_run

CLI = [sys.executable, "-c", "from oneroof.cli import main; main()"]


@pytest.fixture(scope="session")
def campaign_workspace() -> Iterator[Path]:
    """A workspace after `oneroof demo --ratify`: two campaigns, every kind of evidence."""
    with demo_run("oneroof-served-", objects=60, gap=6, ratify=True) as result:
        yield result.workspace


@dataclass
class Served:
    """A running `oneroof serve`: its address, its process and what it printed first."""

    url: str
    process: subprocess.Popen[str]
    first_line: str
    later: list[str] = field(default_factory=list)  # what it printed on stderr afterwards

    drain: threading.Thread | None = None

    def stop(self) -> int:
        """Stop it (SIGTERM: uvicorn shuts down gracefully) and return its exit status."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            status = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait(timeout=20)
        if self.drain is not None:
            self.drain.join(timeout=20)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return status


def serve(workspace: Path, *args: str, timeout: float = 60) -> Served:
    """Start `oneroof --workspace WS serve --port 0 ARGS` and wait for its "serving" line."""
    process = subprocess.Popen(
        [*CLI, "--workspace", str(workspace), "serve", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    line = ""
    while not line and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 0.5)
        if ready:
            line = process.stderr.readline()
            if not line:  # the command ended before it served
                break
    if "serving" not in line:
        process.kill()
        process.wait(timeout=20)
        raise AssertionError(f"oneroof serve did not start: {line}{process.stderr.read()}")
    url = line.split(" on ", 1)[1].split(" ", 1)[0]
    served = Served(url, process, line)
    # drained, so that a server that logs much never blocks on a full pipe
    served.drain = threading.Thread(target=_drain, args=(process.stderr, served.later), daemon=True)
    served.drain.start()
    return served


def _drain(stream: IO[str], into: list[str]) -> None:
    for line in stream:
        into.append(line)


@pytest.fixture(scope="session")
def served_campaign(campaign_workspace: Path) -> Iterator[Served]:
    """`oneroof serve` over the campaign workspace, for the whole session."""
    running = serve(campaign_workspace)
    try:
        yield running
    finally:
        running.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test on the campaign workspace needs PostgreSQL servers: mark it `db` too."""
    for item in items:
        if {"campaign_workspace", "served_campaign"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)
