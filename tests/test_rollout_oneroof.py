"""End to end on the One-Roof reference workspace: rehearse F, refuse while unsigned and
unratified, sign, ratify, apply.

Production is built by the reference generator; the clone is made by hand; the rollout
is the reference plan `rollout/F_ownership_seed` exactly as shipped; the humans' keys are
made and named as `oneroof demo --ratify` does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from fix_clone import run_cli
from fix_pg import Server
from fix_rollout import CLI, make_clone
from oneroof import approvals, config, rollout
from oneroof.demo import add_approvers, load_generator, make_signers
from oneroof.errors import ForbiddenAction
from oneroof.evidence import Evidence
from oneroof.workspace import Workspace as Ws

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "one-roof"


@pytest.fixture
def workspace(
    tmp_path: Path,
    prod_db: str,
    prod_server: Server,
    nonprod_server: Server,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    target = tmp_path / "one-roof"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".oneroof", "__pycache__"))
    clone = f"or_{prod_db.split('_')[-1]}_clone"
    toml = target / "oneroof.toml"
    toml.write_text(toml.read_text().replace('name = "one_roof_clone"', f'name = "{clone}"'))
    monkeypatch.setenv("ONEROOF_PROD_DSN", prod_server.reader_dsn(prod_db))
    monkeypatch.setenv("ONEROOF_APPLY_DSN", prod_server.dsn(prod_db))
    monkeypatch.setenv("ONEROOF_NONPROD_DSN", nonprod_server.dsn("postgres"))
    try:
        yield target
    finally:
        nonprod_server.drop_database(clone)


def counters(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select (select count(*) from core.v_ownership_gap),"
            " (select count(*) from gov.os_proposal_approvals),"
            " (select count(*) from core.ownership where status = 'candidate')"
        ).fetchone()
    assert row is not None
    return {"gap": row[0], "ospa": row[1], "candidates": row[2]}


def test_the_ownership_seed_end_to_end(
    workspace: Path, prod_db: str, prod_server: Server, nonprod_server: Server
) -> None:
    generator = load_generator(EXAMPLE)
    production = prod_server.dsn(prod_db)
    with psycopg.connect(production, autocommit=True) as conn:
        figures = generator.build(conn, objects=1000, gap=210, seed=1)
    assert figures["gap"] == 210 and figures["approvals"] == 0

    cfg = config.load(workspace)
    evidence = Evidence(cfg.evidence_path)
    try:
        make_clone(cfg, evidence, production, nonprod_server.dsn("postgres"), cfg.clone.name or "")
        plan = rollout.load_plan(workspace / "rollout" / "F_ownership_seed", cfg)

        rehearsal = rollout.rehearse(Ws(cfg, evidence), plan)
        assert rehearsal.ok, rehearsal.to_dict()
        runs = {run.id: run for run in rehearsal.artifacts}
        zero = {"inserted": 0, "updated": 0, "deleted": 0}
        assert runs["F_prod_00_preflight"].deltas == {}
        assert runs["F_prod_00_preflight"].rows == [[210, 0, 1]]
        assert runs["F_prod_01_materialize_candidates"].deltas == {
            "core.ownership": {**zero, "inserted": 210}
        }
        assert runs["F_prod_02_activate"].deltas == {"core.ownership": {**zero, "updated": 210}}
        assert runs["F_prod_03_verify"].deltas == {}
        assert all(not run.gates_hold for run in rehearsal.artifacts)  # ospa = 0 on the clone
        assert rehearsal.residue_free
        assert "core.ownership_id_seq" in rehearsal.sequences_restored
        assert rehearsal.touched_tables == ["core.ownership"]

        # the workspace requires signatures ([rollout.approval] required = true)
        with pytest.raises(ForbiddenAction, match="missing 2 L2, 1 L4 signature"):
            rollout.apply(Ws(cfg, evidence), plan, execute=True)

        # the humans sign the plan's digest; production itself is still unratified
        with psycopg.connect(production, autocommit=True) as conn:
            signers = make_signers(workspace.parent / "keys", generator.signers(conn))
        add_approvers(workspace / "oneroof.toml", signers)
        cfg = config.load(workspace)
        signatures: dict[int, str] = {}
        for signer in signers:
            signed = approvals.approve(cfg, evidence, plan, key=signer.key)
            assert signed.ok, signed.to_dict()
            signatures[signer.actor] = approvals.raw_signature(approvals.read_approval(signed.file))
        assert approvals.evaluate(cfg, evidence, plan).met

        refused = rollout.apply(Ws(cfg, evidence), plan, execute=True)
        assert refused.status == "gate closed" and not refused.ok
        assert {g.expression for _, g in refused.closed_gates} == {"ospa >= 1"}
        assert counters(production) == {"gap": 210, "ospa": 0, "candidates": 0}
    finally:
        evidence.close()

    with psycopg.connect(production, autocommit=True) as conn:
        generator.ratify(conn, signatures=signatures)
        recorded: dict[int, str] = dict(
            conn.execute("select actor_id, signature from gov.os_proposal_approvals").fetchall()
        )
    assert counters(production)["ospa"] == 3
    assert recorded == signatures

    command = [*CLI, "--workspace", str(workspace), "rollout", "apply"]
    done = subprocess.run(
        [*command, "rollout/F_ownership_seed", "--execute", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert document["applied"] == [
        "F_prod_00_preflight",
        "F_prod_01_materialize_candidates",
        "F_prod_02_activate",
        "F_prod_03_verify",
    ]
    assert counters(production) == {"gap": 0, "ospa": 3, "candidates": 0}
    with psycopg.connect(production, autocommit=True) as conn:
        ledger = conn.execute(
            "select artifact, deltas, digest, signers from oneroof.rollout_ledger order by id"
        ).fetchall()
    assert [row[0] for row in ledger] == document["applied"]
    assert {row[2] for row in ledger} == {document["approval"]["digest"]}
    assert [s["signer"] for s in ledger[0][3]] == [s.name for s in signers]
    assert ledger[1][1] == {"core.ownership": {"inserted": 210, "updated": 0, "deleted": 0}}
    assert ledger[2][1] == {"core.ownership": {"inserted": 0, "updated": 210, "deleted": 0}}

    again = subprocess.run(
        [*command, "rollout/F_ownership_seed", "--execute", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["status"] == "nothing to do"
    assert [a["status"] for a in json.loads(again.stdout)["artifacts"]] == ["already applied"] * 4


def _docs_applier_sql(database: str) -> str:
    text = (EXAMPLE.parent.parent / "docs" / "safety.md").read_text()
    block = text.split("an applier for the seed plan of the demo:", 1)[1]
    sql = block.split("```sql\n", 1)[1].split("```", 1)[0]
    return sql.replace("DATABASE app", f'DATABASE "{database}"')


def test_the_applier_of_docs_safety_has_what_the_seed_plan_needs(
    workspace: Path,
    prod_db: str,
    prod_server: Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with prod_server.admin(prod_db) as conn:
        load_generator(EXAMPLE).build(conn, objects=50, gap=10, seed=1)
        conn.execute("create role oneroof_applier login")
    dsn = psycopg.conninfo.make_conninfo(prod_server.dsn(prod_db), user="oneroof_applier")
    monkeypatch.setenv("ONEROOF_APPLY_DSN", dsn)
    doctor = ["--workspace", str(workspace), "doctor", "--json"]
    try:
        code, out, _ = run_cli(doctor, capsys)
        assert code == 1 and json.loads(out)["applier"]["missing"]
        with prod_server.admin(prod_db) as conn:
            conn.execute(
                _docs_applier_sql(prod_db).replace("CREATE ROLE oneroof_applier LOGIN;", "")
            )
        code, out, err = run_cli(doctor, capsys)
        applier = json.loads(out)["applier"]
        assert code == 0, (applier, err)
        assert applier["user"] == "oneroof_applier" and applier["ledger"] == "to be created"
    finally:
        with prod_server.admin(prod_db) as conn:
            conn.execute("drop owned by oneroof_applier")
            conn.execute("drop role oneroof_applier")
