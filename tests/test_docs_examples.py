"""Every command example of the README and docs/ runs as written, against real servers.

The shell blocks (```sh) of each page, and the example column of the README's command
table, are run in order with bash, the virtual environment's `oneroof` on PATH, against a
kept demo: its production (as the reader, and the applier) and its non-production server.
Each page starts from a fresh copy of the demo's workspace (the getting-started page from
an empty folder, as a new user would). `cd` moves on; the `make` targets (the suite itself),
the venv activation and the exports of example DSNs are what the test supplies instead.

A command "runs" when it decides: exit 0, 1 (a check or a gate said no) or 3 (a refusal the
page describes); exit 2 (bad input, a wrong example) or a traceback fails the test, naming
the page, the line and the output.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oneroof import demo

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SKIPPED = re.compile(r"^(make |\. \.venv/bin/activate|source \.venv/bin/activate)")
EXAMPLE_EXPORT = re.compile(r"^export (PROD_DSN|NONPROD_DSN|APPLY_DSN|ONEROOF_\w+)=")
DECIDED = {0, 1, 3}


@dataclass(frozen=True)
class Example:
    page: Path
    line: int
    command: str
    in_table: bool = False  # the README's command table: every example is the demo's

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def examples(page: Path) -> list[Example]:
    """The commands of a page: its shell blocks, and its table's example cells."""
    found = []
    in_shell = False
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_shell = not in_shell and stripped[3:].strip() in ("sh", "bash", "shell")
            continue
        if in_shell:
            if stripped and not stripped.startswith("#"):
                found.append(Example(page, number, stripped))
        elif page.name == "README.md" and line.startswith("| `") and line.count("|") >= 4:
            cell = line.rstrip().rstrip("|").rsplit("|", 1)[-1]
            for code in re.findall(r"`([^`]+)`", cell):
                if code.startswith("oneroof "):
                    found.append(Example(page, number, code, in_table=True))
    return found


def _without_comment(command: str) -> str:
    """The command without its trailing `# comment` (a `#` after white space, unquoted)."""
    quote = ""
    for index, char in enumerate(command):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or command[index - 1].isspace()):
            return command[:index].rstrip()
    return command


@pytest.fixture(scope="module")
def kept_demo() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="oneroof-docs-")) / "demo"
    result = demo.run(directory=directory, objects=120, gap=12, keep=True)
    assert result.ok
    try:
        yield directory
    finally:
        demo.stop(directory)
        shutil.rmtree(directory.parent, ignore_errors=True)


def _environment(demo_dir: Path, home: Path) -> dict[str, str]:
    dsns = demo.dsns(demo_dir)
    return {
        **os.environ,
        **dsns,
        "PROD_DSN": dsns["ONEROOF_PROD_DSN"],
        "APPLY_DSN": dsns["ONEROOF_APPLY_DSN"],
        "NONPROD_DSN": dsns["ONEROOF_NONPROD_DSN"],
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "COLUMNS": "200",
    }


def _approver_key(workspace: Path, home: Path) -> None:
    """The page's `~/.ssh/id_ed25519`, an approver of the workspace (as a reader's own key)."""
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    key = ssh / "id_ed25519"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ada", "-f", str(key)],
            check=True,
        )
    toml = workspace / "oneroof.toml"
    if 'name = "ada"' not in toml.read_text():
        toml.write_text(
            toml.read_text() + f'\n[[approver]]\nname = "ada"\nlevel = "L2"\nkey = "{key}.pub"\n'
        )
    shutil.copy(f"{key}.pub", workspace / "ada.pub")


def _serve(example: Example, command: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """A server runs until stopped: it runs when it answers on its port."""
    port = re.search(r"--port\s+(\d+)", command)
    url = f"http://127.0.0.1:{port.group(1) if port else 8765}/api"
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        for _ in range(100):
            if process.poll() is not None:
                return process.returncode, process.communicate()[0]
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    return (0 if response.status == 200 else 1), ""
            except OSError:
                time.sleep(0.1)
        return 1, f"{example.where}: nothing answered on {url}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.communicate(timeout=10)


def _run_page(page: Path, demo_dir: Path, tmp: Path) -> list[str]:
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    workspace = tmp / "workspace"
    shutil.copytree(demo_dir / "workspace", workspace)
    cwd = tmp / "fresh" if page.name == "getting-started.md" else workspace
    cwd.mkdir(exist_ok=True)
    env = _environment(demo_dir, home)
    _approver_key(workspace, home)
    failures = []
    for example in examples(page):
        if example.in_table:
            cwd = workspace
        for part in _without_comment(example.command).split(" && "):
            command = part.strip()
            if not command or SKIPPED.match(command) or EXAMPLE_EXPORT.match(command):
                continue
            if command.startswith("cd "):
                cwd = (cwd / command[3:].strip()).resolve()
                continue
            if command.startswith("oneroof serve"):
                code, output = _serve(example, command, cwd, env)
            else:
                done = subprocess.run(
                    ["bash", "-c", command],
                    cwd=cwd,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                code, output = done.returncode, done.stdout + done.stderr
            if code not in DECIDED or "Traceback (most recent call last)" in output:
                failures.append(f"{example.where}: `{command}` exit {code}: {output[-800:]}")
    return failures


def test_the_readme_and_the_guides_have_examples_to_run() -> None:
    with_examples = {p.name for p in PAGES if examples(p)}
    assert {"README.md", "getting-started.md"} <= with_examples, with_examples


@pytest.mark.parametrize(
    "page", [p for p in PAGES if examples(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_command_example_runs_as_written(page: Path, kept_demo: Path) -> None:
    # outside pytest's basetemp (mode 0700): a demo a page starts runs as the wheel's user
    scratch = Path(tempfile.mkdtemp(prefix="oneroof-page-"))
    scratch.chmod(0o755)
    try:
        failures = _run_page(page, kept_demo, scratch)
    finally:
        for marked in scratch.rglob("demo-run"):
            demo.stop(marked)
        shutil.rmtree(scratch, ignore_errors=True)
    assert not failures, "\n".join(failures)


def test_the_examples_are_found() -> None:
    """A guard on the harness itself: it finds the README's table and shell blocks."""
    found = {e.command for e in examples(ROOT / "README.md")}
    assert "oneroof doctor" in found and "oneroof gates --json" in found
    started = {e.command for e in examples(ROOT / "docs" / "getting-started.md")}
    assert "oneroof clone create" in started
