"""Schemas with what real ones have, read by the least-privilege reader.

Domains, enums, generated columns, triggers, a table without a primary key, a partitioned
table with sub-partitions, a materialized view left stale on purpose: the clone verifies,
deltas declared on a partitioned parent sum its partitions, TRUNCATE is measured, and
misspelled names are bad input naming file and line.
"""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fix_clone import REAL_SCHEMA, remove_clone, run_cli, workspace_toml
from oneroof import campaign, clone, rollout, verdicts
from oneroof.workspace import Workspace


@pytest.fixture
def realistic(prod_server: Any, prod_db: str) -> str:
    with prod_server.admin(prod_db) as conn:
        conn.execute(REAL_SCHEMA)
    return prod_db


@pytest.fixture
def workspace(
    make_workspace: Any, realistic: str, nonprod_server: Any
) -> Iterator[tuple[Any, str]]:
    name = f"rs{uuid.uuid4().hex[:8]}_clone"
    built = make_workspace(realistic, workspace_toml(name))
    try:
        yield built, name
    finally:
        remove_clone(nonprod_server, name)


def _plan(directory: Path, artifacts: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in artifacts.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def test_a_clone_of_a_real_schema_with_a_stale_matview_verifies(
    workspace: tuple[Any, str],
) -> None:
    built, _ = workspace
    with Workspace(built.config()) as ws:
        clone.create(ws)
        result = clone.verify(ws)
    assert result.ok, result.reasons
    # asked to compare a matview's rows, the refreshed copy differs from the stale original
    toml = (built.path / "oneroof.toml").read_text()
    built.write(toml + "[fingerprint]\nmatview_content = true\n")
    with Workspace(built.config()) as ws:
        strict = clone.verify(ws)
    assert not strict.ok
    assert any("rating_counts" in reason for reason in strict.reasons), strict.reasons


def test_a_delta_declared_on_a_partitioned_parent_sums_its_partitions(
    workspace: tuple[Any, str],
) -> None:
    built, _ = workspace
    plan_dir = _plan(
        built.path / "rollout" / "P",
        {
            "01_parent.sql": """\
                -- artifact: P_01_parent
                -- gate: true
                -- expect-delta: public.payment +600
                insert into payment (amount, paid_on)
                    select g, date '2022-01-01' + (g % 360) from generate_series(1, 600) g;
                """,
            "02_leaf.sql": """\
                -- artifact: P_02_leaf
                -- gate: true
                -- expect-delta: public.payment_2022_h1 +10
                insert into payment (amount, paid_on)
                    select g, date '2022-02-01' from generate_series(1, 10) g;
                """,
        },
    )
    with Workspace(built.config()) as ws:
        clone.create(ws)
        plan = rollout.load_plan(plan_dir, ws.cfg)
        result = rollout.rehearse(ws, plan)
    assert result.ok, [(r.id, r.status, r.reason, r.mismatches) for r in result.artifacts]
    first = result.artifacts[0].deltas
    assert set(first) == {"public.payment_2022_h1", "public.payment_2022_h2"}
    assert sum(counts["inserted"] for counts in first.values()) == 600
    # and on production, where the same declaration holds the applied artifacts
    with Workspace(built.config()) as ws:
        applied = rollout.apply(ws, rollout.load_plan(plan_dir, ws.cfg), execute=True)
    assert applied.ok, applied.to_dict()
    assert applied.applied == ["P_01_parent", "P_02_leaf"]


def test_truncate_is_measured_and_declared_as_all_or_n(workspace: tuple[Any, str]) -> None:
    built, _ = workspace
    plan_dir = _plan(
        built.path / "rollout" / "T",
        {
            "01_all.sql": """\
                -- artifact: T_01_all
                -- gate: true
                -- expect-delta: public.audit_log -all
                truncate audit_log;
                """,
            "02_n.sql": """\
                -- artifact: T_02_n
                -- gate: true
                -- expect-delta: public.film -41
                truncate film cascade;
                """,
            "03_refresh.sql": """\
                -- artifact: T_03_refresh
                -- gate: true
                refresh materialized view rating_counts;
                """,
        },
    )
    with Workspace(built.config()) as ws:
        clone.create(ws)
        result = rollout.rehearse(ws, rollout.load_plan(plan_dir, ws.cfg))
    assert result.ok, [(r.id, r.status, r.reason, r.mismatches) for r in result.artifacts]
    assert result.artifacts[0].deltas["public.audit_log"]["deleted"] == 25
    assert result.artifacts[1].deltas["public.film"]["deleted"] == 41
    assert result.artifacts[2].deltas == {}  # derived data: a refresh is no table's delta


def test_a_misspelled_table_in_expect_delta_is_bad_input_naming_file_and_line(
    workspace: tuple[Any, str], capsys: pytest.CaptureFixture[str]
) -> None:
    built, _ = workspace
    plan_dir = _plan(
        built.path / "rollout" / "M",
        {
            "01_typo.sql": """\
                -- artifact: M_01_typo
                -- gate: true
                -- expect-delta: public.flim +0
                select 1;
                """,
        },
    )
    ws_args = ["--workspace", str(built.path)]
    code, _, err = run_cli([*ws_args, "rollout", "plan", str(plan_dir)], capsys)
    assert code == 2, err
    assert f"{plan_dir / '01_typo.sql'}:3:" in err and "no table public.flim" in err
    code, _, _ = run_cli([*ws_args, "clone", "create"], capsys)
    assert code == 0
    code, _, err = run_cli([*ws_args, "rollout", "rehearse", str(plan_dir)], capsys)
    assert code == 2, err
    assert "01_typo.sql:3:" in err and "public.flim" in err


@pytest.mark.parametrize(
    ("counter", "message"),
    [
        ("select count(*) from public.flim", 'relation "public.flim" does not exist'),
        ("delete from public.film returning 1", "is not a plain read"),
        ("select 1, 2", "a counter returns one value"),
    ],
)
def test_a_counter_that_cannot_be_one_is_bad_input_naming_its_line(
    make_workspace: Any,
    realistic: str,
    capsys: pytest.CaptureFixture[str],
    counter: str,
    message: str,
) -> None:
    built = make_workspace(realistic, workspace_toml("x_clone", rest=f'bad = "{counter}"'))
    code, _, err = run_cli(["--workspace", str(built.path), "gates"], capsys)
    # no target uses it: `gates` reads nothing; a target that does reads it
    assert code == 0, err
    toml = (built.path / "oneroof.toml").read_text()
    built.write(toml + '[[target]]\nname = "t"\ngate = "bad >= 0"\n')
    code, _, err = run_cli(["--workspace", str(built.path), "gates"], capsys)
    assert code == 2, err
    assert "oneroof.toml:13:" in err and "counter 'bad'" in err and message in err
    assert "Traceback" not in err
    # a fingerprint reads every counter: the same line, whichever command reads it first
    code, _, err = run_cli(["--workspace", str(built.path), "fingerprint", "production"], capsys)
    assert code == 2 and "oneroof.toml:13:" in err and "counter 'bad'" in err, err


def _measure(built: Any) -> Any:
    with Workspace(built.config()) as ws:
        return campaign.measure(ws)


def test_run_remakes_a_clone_production_moved_away_from_and_reports_row_drift(
    workspace: tuple[Any, str], prod_server: Any, realistic: str
) -> None:
    built, _ = workspace
    first = _measure(built)
    assert first.clone_created and not first.clone_refresh.stale

    # rows the application changed: reported, never a reason to re-make the clone
    with prod_server.admin(realistic) as conn:
        conn.execute("insert into audit_log (note) select 'x' from generate_series(1, 5)")
    rows_only = _measure(built)
    assert not rows_only.clone_created and not rows_only.clone_refresh.stale
    notes = verdicts.judge(built.config(), rows_only).warnings  # read first, at the top
    assert any("public.audit_log (25 → 30 rows)" in n for n in notes), notes

    # a schema change re-makes it
    with prod_server.admin(realistic) as conn:
        conn.execute("alter table audit_log add column source text")
    schema = _measure(built)
    assert schema.clone_created and schema.clone_refresh.remade
    assert "public.audit_log" in schema.clone_refresh.reasons[0]
    assert schema.isolation_before.ok, schema.isolation_before.reasons

    # so does a gated apply, though oneroof's ledger is in no fingerprint
    plan_dir = _plan(
        built.path / "rollout" / "R",
        {
            "01.sql": """\
                -- artifact: R_01
                -- gate: true
                -- expect-delta: public.audit_log +1
                insert into audit_log (note) values ('applied');
                """,
        },
    )
    with Workspace(built.config()) as ws:
        plan = rollout.load_plan(plan_dir, ws.cfg)
        assert rollout.rehearse(ws, plan).ok
        assert rollout.apply(ws, plan, execute=True).ok
    applied = _measure(built)
    assert applied.clone_refresh.remade
    assert applied.clone_refresh.reasons == ["1 gated apply(s) changed production since (R/R_01)"]
    assert not any("oneroof." in n for n in verdicts.judge(built.config(), applied).warnings)

    # refresh = never keeps it, and says why it is out of date
    toml = (built.path / "oneroof.toml").read_text()
    built.write(toml.replace('name = "', 'refresh = "never"\nname = "', 1))
    with prod_server.admin(realistic) as conn:
        conn.execute("create index audit_note on audit_log (note)")
    kept = _measure(built)
    assert not kept.clone_created and kept.clone_refresh.stale and not kept.clone_refresh.remade
    notes = verdicts.judge(built.config(), kept).warnings
    assert any("[clone] refresh = 'never'" in n and "audit_note" in n for n in notes), notes

    # and an age limit re-makes a clone older than it
    built.write(toml.replace('name = "', 'max_age = "1s"\nname = "', 1))
    time.sleep(1.2)
    aged = _measure(built)
    assert aged.clone_refresh.remade
    assert any("older than [clone] max_age (1s)" in r for r in aged.clone_refresh.reasons)


def test_the_ledger_lives_in_the_configured_schema_and_in_no_comparison(
    workspace: tuple[Any, str], prod_server: Any, realistic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    built, _ = workspace
    toml = (built.path / "oneroof.toml").read_text()
    built.write(toml + '[rollout]\nledger_schema = "ops_ledger"\n')
    plan_dir = _plan(
        built.path / "rollout" / "L",
        {
            "01.sql": """\
                -- artifact: L_01
                -- gate: true
                -- expect-delta: public.audit_log +1
                insert into audit_log (note) values ('applied');
                """,
        },
    )
    base = ["--workspace", str(built.path)]
    for command in (["clone", "create"], ["rollout", "rehearse", str(plan_dir)]):
        code, out, err = run_cli([*base, *command], capsys)
        assert code == 0, out + err
    code, out, err = run_cli([*base, "rollout", "apply", str(plan_dir), "--execute"], capsys)
    assert code == 0, out + err
    with prod_server.admin(realistic) as conn:
        where = conn.execute(
            "select to_regclass('ops_ledger.rollout_ledger') is not null,"
            " to_regclass('oneroof.rollout_ledger') is null"
        ).fetchone()
    assert where == (True, True)
    code, out, _ = run_cli([*base, "fingerprint", "production", "--json"], capsys)
    assert "ops_ledger" not in out
    code, out, err = run_cli([*base, "rollout", "status", str(plan_dir), "--json"], capsys)
    assert code == 0 and [r["artifact"] for r in json.loads(out)["ledger"]] == ["L_01"]
    # a ledger schema that is no plain name is bad input naming the line
    built.write(toml + '[rollout]\nledger_schema = "Ops Ledger"\n')
    code, _, err = run_cli([*base, "doctor"], capsys)
    assert code == 2 and "oneroof.toml:" in err and "ledger_schema" in err


APPLIER_PLAN = {
    "01_pay.sql": """\
        -- artifact: A_01_pay
        -- gate: films >= 1
        -- expect-delta: public.payment +1
        insert into payment (amount, paid_on) select max(amount), date '2022-02-02' from payment;
        """,
    "02_index.sql": """\
        -- artifact: A_02_index
        -- gate: true
        create index payment_amount on payment_2022_h1 (amount);
        """,
    "03_truncate.sql": """\
        -- artifact: A_03_truncate
        -- gate: true
        -- expect-delta: public.audit_log -all
        truncate audit_log;
        """,
}


def test_doctor_names_each_privilege_the_applier_lacks(
    workspace: tuple[Any, str],
    prod_server: Any,
    realistic: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built, _ = workspace
    _plan(built.path / "rollout" / "A", APPLIER_PLAN)
    toml = (built.path / "oneroof.toml").read_text()
    built.write(toml + '[[objective]]\nid = "A"\ntitle = "apply"\nrollout = "rollout/A"\n')
    role = f"applier_{uuid.uuid4().hex[:6]}"
    with prod_server.admin(realistic) as conn:
        conn.execute(f"create role {role} login")
        conn.execute(f"grant connect on database {realistic} to {role}")
        conn.execute(f"grant insert on payment to {role}")
    monkeypatch.setenv(
        "ONEROOF_TEST_APPLY_DSN",
        prod_server.dsn(realistic).replace("user=postgres", f"user={role}"),
    )
    base = ["--workspace", str(built.path), "doctor"]
    try:
        code, out, err = run_cli([*base, "--json"], capsys)
        assert code == 1, out + err
        assert out, err
        applier = json.loads(out)["applier"]
        assert applier["user"] == role and applier["ledger"] == "to be created"
        assert set(applier["missing"]) == {
            "CREATE on the database (ledger)",
            "SELECT on payment (01_pay.sql:4)",
            "USAGE on the sequences of payment's column defaults (01_pay.sql:4)",
            "SELECT on public.film (01_pay.sql: counter films)",
            "ownership of payment_2022_h1 (02_index.sql:3)",
            "CREATE on the schema of payment_2022_h1 (02_index.sql:3)",
            "TRUNCATE on audit_log (03_truncate.sql:4)",
            "SELECT on audit_log (03_truncate.sql:4)",
        }, applier["missing"]
        code, _, err = run_cli(base, capsys)
        assert code == 1 and f"the applier {role} cannot apply the plans" in err
        with prod_server.admin(realistic) as conn:
            conn.execute(f"grant create on database {realistic} to {role}")
            conn.execute(f"grant create on schema public to {role}")
            conn.execute(f"grant select on payment, film to {role}")
            conn.execute(f"grant usage on sequence payment_id_seq to {role}")
            conn.execute(f"grant truncate, select on audit_log to {role}")
            conn.execute(f"alter table payment_2022_h1 owner to {role}")
        code, out, err = run_cli([*base, "--json"], capsys)
        assert code == 0, out
        assert json.loads(out)["applier"]["missing"] == []
        # and what doctor passed, apply can do: the applier writes every artifact
        for command in (["clone", "create"], ["rollout", "rehearse", "rollout/A"]):
            code, out, err = run_cli(["--workspace", str(built.path), *command], capsys)
            assert code == 0, out + err
        apply = ["--workspace", str(built.path), "rollout", "apply", "rollout/A", "--execute"]
        code, out, err = run_cli(apply, capsys)
        assert code == 0, out + err
    finally:
        with prod_server.admin(realistic) as conn:
            conn.execute("alter table payment_2022_h1 owner to postgres")
            conn.execute(f"drop owned by {role}")
            conn.execute(f"drop role {role}")
