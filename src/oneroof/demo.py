"""`oneroof demo`: the whole campaign on two embedded servers and the One-Roof workload.

One embedded server plays production, the other the non-production server. The demo
generates production with the reference generator, runs the campaign and, with `ratify`,
plays the humans: it makes Ed25519 keys for the L2 quorum and the L4 President, names them
as `[[approver]]`s of the demo workspace, has each sign the F plan's digest (`oneroof
approve`) and records those signatures in production's `gov.os_proposal_approvals`; then
`rollout watch` applies the auto-executable set unattended, the clone is re-made, and the
campaign runs again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from oneroof import approvals, campaign, clone, config, connect, roles, rollout, sshsig
from oneroof.embedded import EmbeddedServer
from oneroof.errors import BadInput
from oneroof.evidence import Evidence
from oneroof.workload import Workload, WorkloadStats
from oneroof.workspace import Workspace

PRODUCTION_DATABASE = "one_roof"
_DEMO_MARK = ".oneroof-demo"


def example_workspace() -> Path:
    """The reference workspace `examples/one-roof/` (source tree or installed package)."""
    here = Path(__file__).resolve()
    for candidate in (
        here.parents[2] / "examples" / "one-roof",
        here.parent / "_examples" / "one-roof",
    ):
        if (candidate / "oneroof.toml").exists():
            return candidate
    raise BadInput("the reference workspace examples/one-roof was not found")


def load_generator(workspace: Path) -> ModuleType:
    """The workspace's `generate.py` as a module (its folder name has a hyphen)."""
    path = workspace / "generate.py"
    spec = importlib.util.spec_from_file_location("oneroof_one_roof_generate", path)
    if spec is None or spec.loader is None:
        raise BadInput("cannot load the generator", file=path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class DemoResult:
    """The campaigns the demo ran and where everything is."""

    directory: Path
    workspace: Path
    reports: list[campaign.CampaignResult] = field(default_factory=list)
    generated: dict[str, Any] = field(default_factory=dict)
    applied: Any = None
    seconds: float = 0.0
    application: WorkloadStats | None = None  # with `live`: what the application saw

    @property
    def ok(self) -> bool:
        live_ok = self.application is None or self.application.ok
        return (
            all(r.ok for r in self.reports)
            and (self.applied is None or self.applied.ok)
            and live_ok
        )


def servers(directory: Path) -> tuple[EmbeddedServer, EmbeddedServer]:
    """The demo's (production, non-production) servers in `directory`."""
    return (
        EmbeddedServer(directory / "servers" / "production"),
        EmbeddedServer(directory / "servers" / "nonprod"),
    )


def stop(directory: Path) -> int:
    """Stop and remove the servers of a demo run with `keep`; how many were running."""
    if directory.exists() and any(directory.iterdir()) and not (directory / _DEMO_MARK).exists():
        raise BadInput("not a demo directory (no servers of `oneroof demo` here)", file=directory)
    running = 0
    for server in servers(directory):
        running += server.running()
        server.remove()
    return running


def dsns(directory: Path) -> dict[str, str]:
    """The environment the demo's workspace reads its DSNs from, for a kept demo's servers."""
    production, nonprod = servers(directory)
    return {
        "ONEROOF_PROD_DSN": production.dsn(PRODUCTION_DATABASE, user=roles.READER_ROLE),
        "ONEROOF_APPLY_DSN": production.dsn(PRODUCTION_DATABASE),
        "ONEROOF_NONPROD_DSN": nonprod.dsn(),
    }


def _prepare(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        if not (directory / _DEMO_MARK).exists():
            raise BadInput(
                "not empty and not a previous demo directory; choose another --dir",
                file=directory,
            )
        stop(directory)  # servers a kept demo left running there must not outlive their files
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _DEMO_MARK).write_text("made by oneroof demo; safe to delete\n")


def run(
    *,
    directory: Path | None = None,
    objects: int = 1000,
    gap: int = 210,
    seed: int = 1,
    ratify: bool = False,
    keep: bool = False,
    live: bool = False,
    step: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the demo end to end; servers are removed at the end unless `keep`."""
    say = step or (lambda _message: None)
    if objects < 1 or not 0 <= gap <= objects:
        raise BadInput(f"need objects ≥ 1 and 0 ≤ gap ≤ objects (got {objects}, {gap})")
    started = time.monotonic()
    directory = (directory or Path(tempfile.mkdtemp(prefix="oneroof-demo-"))).resolve()
    _prepare(directory)
    workspace = directory / "workspace"
    shutil.copytree(example_workspace(), workspace, ignore=shutil.ignore_patterns(".oneroof"))
    say("starting two embedded PostgreSQL servers (production, non-production)")
    production, nonprod = servers(directory)
    production.start()
    result = DemoResult(directory, workspace)
    application: Workload | None = None
    try:
        nonprod.start()
        generator = load_generator(workspace)
        with connect.open_admin(production.dsn()) as admin:
            admin.execute(f'create database "{PRODUCTION_DATABASE}"')
        # production is read by a least-privilege reader, made with the SQL docs/safety.md shows
        with connect.open_admin(production.dsn(PRODUCTION_DATABASE)) as admin:
            admin.execute(roles.reader_sql(roles.READER_ROLE, PRODUCTION_DATABASE))
        os.environ.update(dsns(directory))
        say(f"generating production: {objects} objects, gap {gap}, seed {seed}")
        with connect.open_admin(production.dsn(PRODUCTION_DATABASE)) as world:
            result.generated = dict(generator.build(world, objects=objects, gap=gap, seed=seed))
        cfg = config.load(workspace)
        evidence = Evidence(cfg.evidence_path)
        if live:
            say("the application starts writing to production (issues, object renames)")
            application = Workload(production.dsn(PRODUCTION_DATABASE), rate=20).start()
        with Workspace(cfg, evidence) as ws:
            result.reports.append(campaign.run(ws, step=say))
        if ratify:
            say("the humans ratify APR-BOOT-AUTHMODEL-1 (L2 quorum + L4 President signature)")
            cfg = _ratify(
                cfg, evidence, directory, generator, production.dsn(PRODUCTION_DATABASE), say
            )
            plans = [o.rollout for o in cfg.objectives if o.rollout]
            with Workspace(cfg, evidence) as ws:
                for plan_dir in plans:
                    plan = rollout.load_plan(workspace / str(plan_dir), cfg)
                    say(f"rollout watch {plan_dir}: gates open → auto-executable set, then verify")
                    result.applied = rollout.watch(ws, plan, interval=0.5, timeout=60)
                say("re-clone from the changed production")
                clone.drop(ws)
            with Workspace(cfg, evidence) as ws:
                result.reports.append(campaign.run(ws, step=say))
        if application is not None:
            result.application = application.stop()
            say(f"the application stops: {result.application.committed} transactions committed")
    finally:
        if application is not None and result.application is None:
            result.application = application.stop()
        if not keep:
            production.remove()
            nonprod.remove()
        result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class Signer:
    """A demo human who signs: the actor, the approver name, the level and the private key."""

    actor: int
    name: str
    level: str
    key: Path


def make_signers(directory: Path, actors: list[tuple[int, str, str]]) -> list[Signer]:
    """An Ed25519 key pair per actor (id, name, level) in `directory`, OpenSSH format."""
    directory.mkdir(parents=True, exist_ok=True)
    result = []
    for actor_id, name, level in actors:
        approver = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50] + f"-{actor_id}"
        path = directory / approver
        private = sshsig.new_key_file(path)
        public = sshsig.openssh_line(private.public_key())
        path.with_name(f"{approver}.pub").write_text(f"{public} {approver}\n")
        result.append(Signer(actor_id, approver, level, path))
    return result


def add_approvers(toml: Path, signers: list[Signer]) -> None:
    """Append an `[[approver]]` per signer (name, level, public key file) to `toml`."""
    lines = ["", "# appended by `oneroof demo --ratify`: the humans who sign, and their keys"]
    for signer in signers:
        lines += [
            "[[approver]]",
            f"name = {json.dumps(signer.name)}",
            f"level = {json.dumps(signer.level)}",
            f"key = {json.dumps(str(signer.key.with_name(signer.key.name + '.pub')))}",
            "",
        ]
    toml.write_text(toml.read_text(encoding="utf-8") + "\n".join(lines), encoding="utf-8")


def _ratify(
    cfg: config.Config,
    evidence: Evidence,
    directory: Path,
    generator: ModuleType,
    production_dsn: str,
    say: Callable[[str], None],
) -> config.Config:
    """Keys for the signers, `[[approver]]` entries, a signature of each over every plan an
    objective names, and the approvals recorded in production with those signature values.
    Returns the workspace's config as it now is."""
    with connect.open_admin(production_dsn) as world:
        actors = generator.signers(world)
    signers = make_signers(directory / "keys", actors)
    add_approvers(cfg.file, signers)
    cfg = config.load(cfg.workspace)
    signatures: dict[int, str] = {}
    for entry in [o.rollout for o in cfg.objectives if o.rollout]:
        plan = rollout.load_plan(cfg.workspace / str(entry), cfg)
        if approvals.current(evidence, plan)[0] is None:
            say(f"rollout rehearse {entry}: the humans sign a passing rehearsal")
            with Workspace(cfg, evidence) as ws:
                rollout.rehearse(ws, plan)
        for signer in signers:
            result = approvals.approve(
                cfg,
                evidence,
                plan,
                key=signer.key,
                name=signer.name,
                comment="ratifies APR-BOOT-AUTHMODEL-1 (oneroof demo)",
            )
            say(f"  {signer.name} ({signer.level}) signs {plan.name}: {result.file.name}")
            signatures[signer.actor] = approvals.raw_signature(approvals.read_approval(result.file))
    with connect.open_admin(production_dsn) as world:
        generator.ratify(world, signatures=signatures)
    return cfg
