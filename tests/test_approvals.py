"""Approvals: the plan statement and digest, signatures, the quorum, and apply refusing without it.

The pure tests build a plan and a rehearsal record by hand; the database tests use the
fix_rollout workspace (a small production, its clone and a three-artifact plan) with four
approvers: two L2, one L4 President and one L1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fix_rollout import TOML, Env, write_plan
from oneroof import approvals, config, rollout, sshsig
from oneroof.errors import BadInput, ConfigError, ForbiddenAction, NotFound
from oneroof.evidence import Record
from oneroof.workspace import Workspace as Ws

SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(
    SSH_KEYGEN is None,
    reason="ssh-keygen is not installed (Debian: apt-get install openssh-client); the "
    "interoperability with `ssh-keygen -Y sign` cannot be shown here",
)


@dataclass(frozen=True)
class Person:
    """Someone holding an Ed25519 key (an approver when oneroof.toml names them)."""

    name: str
    level: str
    private: Ed25519PrivateKey
    key: Path  # the private key file, OpenSSH format

    @property
    def public(self) -> str:
        return sshsig.openssh_line(self.private.public_key())


def person(directory: Path, name: str, level: str) -> Person:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    private = sshsig.new_key_file(path)
    path.with_name(f"{name}.pub").write_text(sshsig.openssh_line(private.public_key()) + "\n")
    return Person(name, level, private, path)


def approver_toml(people: list[Person]) -> str:
    return "".join(
        f'\n[[approver]]\nname = "{p.name}"\nlevel = "{p.level}"\nkey = "{p.public}"\n'
        for p in people
    )


@pytest.fixture
def team(tmp_path: Path) -> dict[str, Person]:
    keys = tmp_path / "keys"
    return {
        "ada": person(keys, "ada", "L2"),
        "bruno": person(keys, "bruno", "L2"),
        "pres": person(keys, "pres", "L4"),
        "carl": person(keys, "carl", "L1"),
        "mallory": person(keys, "mallory", "L4"),  # never named in oneroof.toml
    }


def named(team: dict[str, Person]) -> list[Person]:
    return [team[n] for n in ("ada", "bruno", "pres", "carl")]


# -- pure: statement, digest, signatures, quorum ------------------------------------------------


def pure_cfg(tmp_path: Path, people: list[Person], extra: str = "") -> config.Config:
    text = TOML.format(clone="t_clone") + extra + approver_toml(people)
    file = tmp_path / "ws" / "oneroof.toml"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    return config.parse(text, file)


def pure_plan(cfg: config.Config) -> rollout.Plan:
    """The test plan of the workspace (written the first time)."""
    folder = cfg.workspace / "rollout" / "T_plan"
    if not folder.exists():
        write_plan(folder)
    return rollout.load_plan(folder, cfg)


def record_of(plan: rollout.Plan, *, seq: int = 7, **changes: object) -> Record:
    payload: dict[str, object] = {
        "plan": plan.name,
        "checksums": plan.checksums,
        "ok": True,
        "clone": "t_clone",
        "source_fingerprint": "f" * 64,
        "artifacts": [
            {
                "id": a.id,
                "status": "ok",
                "deltas": {"app.items": {"inserted": 3, "updated": 0, "deleted": 0}}
                if a.id == "T_01_add"
                else {},
            }
            for a in plan.artifacts
        ],
    }
    payload.update(changes)
    return Record(seq, "2025-01-02T03:04:05+00:00", "rehearsal", None, None, None, None, payload,
                  "0" * 64, f"{seq:064x}")  # fmt: skip


def test_the_statement_names_plan_artifacts_rehearsal_and_source_and_its_digest_is_stable(
    tmp_path: Path, team: dict[str, Person]
) -> None:
    cfg = pure_cfg(tmp_path, named(team))
    plan = pure_plan(cfg)
    statement = approvals.statement(plan, record_of(plan))
    lines = statement.text.splitlines()
    assert lines[0] == approvals.HEADER
    assert lines[1] == "plan: T_plan"
    for number, artifact in enumerate(plan.artifacts, start=1):
        assert f"artifact {number}: {artifact.id} sha256 {artifact.checksum}" in lines
    assert "  rehearsed: ok, app.items +3 ~0 -0" in lines
    assert f"rehearsal: evidence #7 at 2025-01-02T03:04:05+00:00, record sha256 {7:064x}" in lines
    assert f"clone source fingerprint: {'f' * 64}" in lines
    assert not any(line.lstrip().startswith("forecast") for line in lines)
    assert statement.text.endswith("\n")
    assert statement.digest == approvals.digest_of(statement.text)
    assert approvals.statement(plan, record_of(plan)).digest == statement.digest

    # every input moves the digest: another rehearsal, another source, a forecast
    assert approvals.statement(plan, record_of(plan, seq=8)).digest != statement.digest
    moved = record_of(plan, source_fingerprint="e" * 64)
    assert approvals.statement(plan, moved).digest != statement.digest
    forecast = record_of(plan, forecast={"wal_bytes": 61440})
    with_forecast = approvals.statement(plan, forecast)
    assert 'forecast: {"wal_bytes":61440}' in with_forecast.text.splitlines()
    assert with_forecast.digest != statement.digest
    # a value cannot forge a line of its own
    forged = approvals.statement(plan, record_of(plan, clone="x\nplan: other"))
    assert "plan: other" not in forged.text.splitlines()

    # an edited artifact is another plan: the old record does not fit it
    first = plan.artifacts[0].file
    first.write_text(first.read_text() + "-- edited\n")
    edited = pure_plan(cfg)
    with pytest.raises(ValueError, match="not a rehearsal of these exact artifacts"):
        approvals.statement(edited, record_of(plan))
    with pytest.raises(ValueError, match="failed"):
        approvals.statement(edited, record_of(edited, ok=False))


def sign(person: Person, statement: approvals.Statement, folder: Path) -> approvals.Approval:
    """An approval file written by `person`'s key, read back as verification reads it."""
    keyed = approvals.Approver(
        person.name, person.level, person.private.public_key(), ""
    )  # the claims the file makes
    approval = approvals.sign(statement, person.private, keyed, signed_at="2025-01-02T10:00:00")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / approval.file.name
    path.write_text(json.dumps(approval.to_dict(), indent=2) + "\n")
    return approvals.read_approval(path)


def edit(approval: approvals.Approval, **changes: str) -> approvals.Approval:
    """The approval file rewritten with some fields changed (tampering)."""
    data = {**approval.to_dict(), **changes}
    approval.file.write_text(json.dumps(data, indent=2) + "\n")
    return approvals.read_approval(approval.file)


def test_each_signature_is_judged_and_the_quorum_says_what_is_missing(
    tmp_path: Path, team: dict[str, Person]
) -> None:
    cfg = pure_cfg(tmp_path, named(team))
    plan = pure_plan(cfg)
    now = approvals.statement(plan, record_of(plan))
    folder = tmp_path / "approvals"

    def check(*files: approvals.Approval) -> approvals.Verification:
        return approvals.verify(cfg, plan.name, now, files)

    ada, bruno, pres = (sign(team[n], now, folder) for n in ("ada", "bruno", "pres"))
    met = check(ada, bruno, pres)
    assert met.met and met.missing == {}
    assert [s.status for s in met.signatures] == ["valid"] * 3
    assert [(s["signer"], s["level"]) for s in met.signers] == [
        ("ada", "L2"),
        ("bruno", "L2"),
        ("pres", "L4"),
    ]
    assert "met over digest" in met.summary() and "ada (L2, 2025-01-02T10:00:00)" in met.summary()

    # a quorum short by one
    short = check(ada, pres)
    assert not short.met and short.missing == {"L2": 1}
    assert "missing 1 L2 signature(s)" in short.summary()
    # the same approver twice counts once
    again = sign(team["ada"], now, tmp_path / "again")
    assert check(ada, again, pres).missing == {"L2": 1}

    # a signature by a key no [[approver]] holds, even when the file names a real approver
    mallory = sign(team["mallory"], now, folder)
    impostor = sign(replace(team["mallory"], name="pres"), now, tmp_path / "impostor")
    assert check(mallory).signatures[0].status == approvals.UNKNOWN_KEY
    judged = check(ada, bruno, impostor)
    assert judged.signatures[2].status == approvals.UNKNOWN_KEY
    assert "no [[approver]]" in judged.signatures[2].detail
    assert judged.missing == {"L4": 1}

    # keys of the wrong level: an L2 signature that claims L4, an L1 the quorum does not count
    promoted = edit(sign(team["bruno"], now, tmp_path / "promoted"), level="L4")
    carl = sign(team["carl"], now, folder)
    judged = check(ada, promoted, carl)
    assert [s.status for s in judged.signatures] == ["valid", "wrong level", "wrong level"]
    assert "bruno is L2 in oneroof.toml" in judged.signatures[1].detail
    assert "L1 counts for nothing" in judged.signatures[2].detail
    assert judged.missing == {"L2": 1, "L4": 1}

    # edited approval files: the statement, the signature, the digest, the signer
    other = now.text.replace("t_clone", "u_clone")
    tampered = [
        edit(sign(team["pres"], now, tmp_path / "t1"), statement=other),
        edit(
            sign(team["pres"], now, tmp_path / "t2"),
            signature=sshsig.sign(team["pres"].private, b"something else", "oneroof"),
        ),
        edit(sign(team["pres"], now, tmp_path / "t3"), digest="0" * 64),
        edit(sign(team["pres"], now, tmp_path / "t4"), signer="ada"),
        edit(sign(team["pres"], now, tmp_path / "t5"), signature="not a signature"),
    ]
    judged = check(*tampered)
    assert [s.status for s in judged.signatures] == [approvals.BAD_SIGNATURE] * 5
    assert "does not verify" in judged.signatures[0].detail
    assert "the file was edited" in judged.signatures[2].detail
    assert "made with pres's key, but the file names 'ada'" in judged.signatures[3].detail
    assert judged.missing == {"L2": 2, "L4": 1}
    # a signature for another namespace never verifies
    wrong_ns = sshsig.sign(team["pres"].private, now.text.encode(), "git")
    judged = check(edit(sign(team["pres"], now, tmp_path / "t6"), signature=wrong_ns))
    assert judged.signatures[0].status == approvals.BAD_SIGNATURE
    assert "namespace 'git'" in judged.signatures[0].detail


def test_another_version_of_the_plan_is_another_digest(
    tmp_path: Path, team: dict[str, Person]
) -> None:
    cfg = pure_cfg(tmp_path, named(team))
    plan = pure_plan(cfg)
    before = approvals.statement(plan, record_of(plan))
    signed = [sign(team[n], before, tmp_path / "a") for n in ("ada", "bruno", "pres")]
    assert approvals.verify(cfg, plan.name, before, signed).met

    first = plan.artifacts[0].file
    first.write_text(first.read_text() + "-- an innocent comment\n")
    edited = pure_plan(cfg)
    after = approvals.statement(edited, record_of(edited, seq=9))  # re-rehearsed, passing
    judged = approvals.verify(cfg, plan.name, after, signed)
    assert not judged.met and judged.missing == {"L2": 2, "L4": 1}
    assert {s.status for s in judged.signatures} == {approvals.OTHER_DIGEST}
    assert "edited since: T_01_add" in judged.signatures[0].detail
    assert "rehearsal #7, now #9" in judged.signatures[0].detail

    # the same artifacts re-rehearsed: another digest too (the approval names its evidence)
    rerun = approvals.statement(plan, record_of(plan, seq=8))
    judged = approvals.verify(cfg, plan.name, rerun, signed)
    assert not judged.met
    assert judged.signatures[0].detail == "another version of the plan (rehearsal #7, now #8)"


def test_per_plan_quorum_default_and_required(tmp_path: Path, team: dict[str, Person]) -> None:
    cfg = pure_cfg(
        tmp_path,
        named(team),
        extra="[rollout.approval.plans]\nT_plan = { L4 = 1 }\n",
    )
    assert approvals.quorum(cfg, "T_plan") == {"L4": 1}
    assert approvals.quorum(cfg, "other") == {"L2": 2, "L4": 1}
    assert approvals.required(cfg)
    plan = pure_plan(cfg)
    now = approvals.statement(plan, record_of(plan))
    only = sign(team["pres"], now, tmp_path / "a")
    assert approvals.verify(cfg, plan.name, now, [only]).met
    ada = sign(team["ada"], now, tmp_path / "a")
    assert approvals.verify(cfg, plan.name, now, [ada]).signatures[0].status == "wrong level"

    bare = pure_cfg(tmp_path / "bare", [])
    assert not approvals.required(bare)
    forced = pure_cfg(tmp_path / "forced", [], extra="[rollout.approval]\nrequired = true\n")
    assert approvals.required(forced)
    nobody = approvals.verify(forced, plan.name, now, [])
    assert not nobody.met and "no [[approver]] in oneroof.toml" in nobody.summary()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[rollout.approval]\nquorum = {}\n", "at least one level"),
        ("[rollout.approval]\nquorum = { L2 = 0 }\n", "at least 1 signature"),
        ("[rollout.approval]\nquorom = { L2 = 1 }\n", "unknown key"),
        ('[[approver]]\nname = "a b"\nlevel = "L2"\nkey = "x"\n', "letters, digits"),
    ],
)
def test_bad_approval_settings_are_config_errors(tmp_path: Path, extra: str, message: str) -> None:
    file = tmp_path / "oneroof.toml"
    with pytest.raises(ConfigError, match=message):
        config.parse(TOML.format(clone="t_clone") + extra, file)


def test_keys_inline_pem_or_a_file_and_bad_ones_name_their_line(
    tmp_path: Path, team: dict[str, Person]
) -> None:
    ada, bruno, pres = team["ada"], team["bruno"], team["pres"]
    pem = (
        pres.private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    extra = (
        f'[[approver]]\nname = "ada"\nlevel = "L2"\nkey = "{ada.public}"\n'
        f'[[approver]]\nname = "bruno"\nlevel = "L2"\nkey = "{bruno.key}.pub"\n'
        f'[[approver]]\nname = "pres"\nlevel = "L4"\nkey = """\n{pem}"""\n'
    )
    cfg = pure_cfg(tmp_path, [], extra=extra)
    keyed = approvals.approvers(cfg)
    assert [(a.name, a.fingerprint) for a in keyed] == [
        (p.name, sshsig.fingerprint(p.private.public_key())) for p in (ada, bruno, pres)
    ]

    ecdsa = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    for bad, message in (
        ('key = "keys/nowhere.pub"', "no key file"),
        (f'key = "{ecdsa}"', "not an Ed25519 key"),
        ('key = "ssh-ed25519 AAAA"', "approver"),
        ('key = "-----BEGIN PUBLIC KEY-----"', "approver"),
    ):
        text = f'[[approver]]\nname = "x"\nlevel = "L2"\n{bad}\n'
        cfg = pure_cfg(tmp_path / "bad", [], extra=text)
        with pytest.raises(ConfigError, match=message) as caught:
            approvals.approvers(cfg)
        assert f"oneroof.toml:{cfg.text.splitlines().index(bad) + 1}:" in str(caught.value)
    twice = pure_cfg(tmp_path / "twice", [ada, replace(bruno, name="ada")])
    with pytest.raises(ConfigError, match="'ada' is approver"):
        approvals.approvers(twice)
    shared = pure_cfg(tmp_path / "shared", [ada, replace(ada, name="ada2")])
    with pytest.raises(ConfigError, match="one key, one approver"):
        approvals.approvers(shared)


def test_a_malformed_approval_file_is_bad_input_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "ada-12345678.json"
    path.write_text('{\n  "signer": "ada",\n  "level": "L2",\n  oops\n}\n')
    with pytest.raises(BadInput, match=r"ada-12345678.json:4: not valid JSON"):
        approvals.read_approval(path)
    path.write_text('{\n  "signer": "ada",\n  "level": 2\n}\n')
    with pytest.raises(BadInput, match=r"ada-12345678.json:3: 'level' must be text"):
        approvals.read_approval(path)
    path.write_text('{\n  "signer": "ada"\n}\n')
    with pytest.raises(BadInput, match=r"ada-12345678.json: 'level' is missing"):
        approvals.read_approval(path)
    path.write_text("[]\n")
    with pytest.raises(BadInput, match="one JSON object"):
        approvals.read_approval(path)


def test_sshsig_round_trip_and_refusals() -> None:
    key = Ed25519PrivateKey.generate()
    armored = sshsig.sign(key, b"message\n", "oneroof")
    assert armored.startswith(sshsig.BEGIN + "\n") and armored.endswith(sshsig.END + "\n")
    assert all(len(line) <= 70 for line in armored.splitlines())
    parsed = sshsig.parse(armored)
    assert parsed.hash_algorithm == "sha512" and parsed.namespace == "oneroof"
    assert parsed.fingerprint == sshsig.fingerprint(key.public_key())
    sshsig.verify(parsed, b"message\n", "oneroof")
    sshsig.verify(sshsig.parse(sshsig.sign(key, b"m", "oneroof", "sha256")), b"m", "oneroof")
    with pytest.raises(sshsig.SshSigError, match="does not verify"):
        sshsig.verify(parsed, b"message", "oneroof")
    with pytest.raises(sshsig.SshSigError, match="namespace"):
        sshsig.verify(parsed, b"message\n", "file")
    blob = sshsig.dearmor(armored)
    for broken, message in (
        ("garbage", "does not start with"),
        (sshsig.armor(blob[:-5]), "truncated"),
        (sshsig.armor(b"SSHSIX" + blob[6:]), "preamble"),
        (sshsig.armor(blob + b"\x00"), "after the last field"),
        (sshsig.BEGIN + "\n!!!\n" + sshsig.END, "base64"),
    ):
        with pytest.raises(sshsig.SshSigError, match=message):
            sshsig.parse(broken)


def test_private_keys_openssh_or_pem_and_a_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, team: dict[str, Person]
) -> None:
    monkeypatch.delenv(approvals.PASSPHRASE_ENV, raising=False)
    ada = team["ada"]
    expected = sshsig.fingerprint(ada.private.public_key())
    assert sshsig.fingerprint(approvals.load_private_key(ada.key).public_key()) == expected
    pem = tmp_path / "ada.pem"
    pem.write_bytes(
        ada.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"correct horse"),
        )
    )
    with pytest.raises(BadInput, match=approvals.PASSPHRASE_ENV):
        approvals.load_private_key(pem)
    monkeypatch.setenv(approvals.PASSPHRASE_ENV, "correct horse")
    assert sshsig.fingerprint(approvals.load_private_key(pem).public_key()) == expected
    other = tmp_path / "ec.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(BadInput, match="not an Ed25519 key"):
        approvals.load_private_key(other)
    garbage = tmp_path / "garbage"
    garbage.write_text("hello\n")
    with pytest.raises(BadInput, match="garbage: not a private key"):
        approvals.load_private_key(garbage)
    with pytest.raises(BadInput, match="cannot read the key"):
        approvals.load_private_key(tmp_path / "nowhere")


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


@needs_ssh_keygen
def test_ssh_keygen_signatures_verify_here_and_ours_verify_with_ssh_keygen(
    tmp_path: Path, team: dict[str, Person]
) -> None:
    assert SSH_KEYGEN is not None
    cfg = pure_cfg(tmp_path, named(team))
    plan = pure_plan(cfg)
    now = approvals.statement(plan, record_of(plan))
    message = tmp_path / "statement.txt"
    message.write_bytes(now.text.encode())
    signed = run(
        SSH_KEYGEN, "-Y", "sign", "-n", "oneroof", "-f", str(team["ada"].key), str(message)
    )
    assert signed.returncode == 0, signed.stderr
    armored = (tmp_path / "statement.txt.sig").read_text()
    parsed = sshsig.parse(armored)
    sshsig.verify(parsed, now.text.encode(), "oneroof")
    # Ed25519 is deterministic: ours is byte for byte what ssh-keygen wrote
    assert sshsig.sign(team["ada"].private, now.text.encode(), "oneroof") == armored

    ours = sign(team["bruno"], now, tmp_path / "a")
    (tmp_path / "ours.sig").write_text(ours.signature)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"bruno {team['bruno'].public}\n")
    signature = str(tmp_path / "ours.sig")
    verify_args = ("-Y", "verify", "-f", str(allowed), "-I", "bruno", "-n", "oneroof")
    checked = run(SSH_KEYGEN, *verify_args, "-s", signature, stdin=now.text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert 'Good "oneroof" signature for bruno' in checked.stdout + checked.stderr


# -- on real servers: apply refuses without the quorum ----------------------------------------


@pytest.fixture
def signed_env(env: Env, team: dict[str, Person]) -> Iterator[Env]:
    """The rollout workspace with four approvers, a clone, a passing rehearsal and go = 1."""
    toml = env.workspace / "oneroof.toml"
    toml.write_text(toml.read_text() + approver_toml(named(team)))
    env.make_clone()
    rehearse(env)
    env.prod("update app.flags set value = 1 where name = 'go'")
    yield env


def rehearse(env: Env) -> None:
    evidence = env.evidence()
    try:
        assert rollout.rehearse(Ws(env.cfg, evidence), env.plan()).ok
    finally:
        evidence.close()


def approve(env: Env, who: Person) -> approvals.ApproveResult:
    evidence = env.evidence()
    try:
        return approvals.approve(env.cfg, evidence, env.plan(), key=who.key)
    finally:
        evidence.close()


def apply(env: Env) -> rollout.ApplyResult:
    evidence = env.evidence()
    try:
        return rollout.apply(Ws(env.cfg, evidence), env.plan(), execute=True)
    finally:
        evidence.close()


def verify(env: Env) -> dict[str, Any]:
    done = env.cli("approvals", "verify", str(env.plan_dir), "--json")
    document: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (0 if document["met"] else 1), done.stderr
    return document


OLD_LEDGER = """
create schema oneroof;
create table oneroof.rollout_ledger (
    id bigint generated always as identity primary key,
    plan text not null,
    artifact text not null,
    checksum text not null,
    file text not null,
    applied_at timestamptz not null default now(),
    applied_by text not null default current_user,
    application text not null default current_setting('application_name'),
    client_addr inet default inet_client_addr(),
    deltas jsonb not null,
    gates jsonb not null,
    stops jsonb not null,
    rehearsal text,
    unique (plan, artifact)
);
"""


def test_apply_refuses_without_the_quorum_then_applies_and_the_ledger_names_the_signers(
    signed_env: Env, team: dict[str, Person]
) -> None:
    env = signed_env
    refused = env.cli("rollout", "apply", str(env.plan_dir), "--execute")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "missing 2 L2, 1 L4 signature(s)" in refused.stderr
    assert "oneroof approve" in refused.stderr
    dry = env.cli("rollout", "apply", str(env.plan_dir))
    assert dry.returncode == 1 and "would refuse" in dry.stdout

    done = env.cli("approve", str(env.plan_dir), "--key", str(team["ada"].key), "--comment", "ok")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ada (L2) signed digest" in done.stdout and "quorum NOT met" in done.stdout
    digest = str(verify(env)["digest"])
    assert (env.plan_dir / "approvals" / f"ada-{digest[:8]}.json").exists()
    approve(env, team["pres"])
    approve(env, team["carl"])  # L1: recorded, counts for nothing

    # short by one L2
    with pytest.raises(ForbiddenAction, match="missing 1 L2 signature"):
        apply(env)
    watched = env.cli("rollout", "watch", str(env.plan_dir), "--interval", "0.1", "--timeout", "0")
    assert watched.returncode == 3 and "missing 1 L2" in watched.stderr
    assert env.ledger() == [] and env.items() == {"open": 2}
    document = verify(env)
    statuses = {s["signer"]: s["status"] for s in document["signatures"]}
    assert statuses == {"ada": "valid", "carl": "wrong level", "pres": "valid"}
    assert document["missing"] == {"L2": 1}

    text = env.cli("approvals", "verify", str(env.plan_dir))
    assert text.returncode == 1 and "quorum NOT met" in text.stdout and "wrong level" in text.stdout
    unknown = env.cli("approve", str(env.plan_dir), "--key", str(team["mallory"].key))
    assert unknown.returncode == 2 and "no [[approver]]'s" in unknown.stderr

    approve(env, team["bruno"])
    assert verify(env)["met"] is True
    env.prod(OLD_LEDGER)  # a ledger made before approvals existed gets their columns
    result = apply(env)
    assert result.ok and result.applied == ["T_01_add", "T_02_close", "T_03_verify"]
    check = next(c for c in result.checks if c.name == "approval")
    assert check.ok and "ada (L2" in check.detail and "pres (L4" in check.detail
    rows = env.prod("select digest, signers from oneroof.rollout_ledger order by id")
    assert {row[0] for row in rows} == {digest}
    assert [s["signer"] for s in rows[0][1]] == ["ada", "bruno", "pres"]
    assert all(s["signed_at"] for s in rows[0][1])
    status = json.loads(env.cli("rollout", "status", str(env.plan_dir), "--json").stdout)
    assert status["ledger"][0]["digest"] == digest
    assert [s["signer"] for s in status["ledger"][0]["signers"]] == ["ada", "bruno", "pres"]
    shown = env.cli("rollout", "status", str(env.plan_dir))
    assert f"approved digest {digest[:12]}… by ada (L2, " in shown.stdout
    assert "T_01_add, T_02_close, T_03_verify" in shown.stdout


def signed_gate(env: Env) -> dict[str, Any]:
    """The values of the target `signed` (gate `approved`) by `oneroof gates`."""
    document = json.loads(env.cli("gates", "--json").stdout)
    found: dict[str, Any] = next(g for g in document["gates"] if g["target"] == "signed")
    assert found["holds"] is found["values"]["approved"]
    values: dict[str, Any] = found["values"]
    return values


def test_an_artifact_edited_after_approval_closes_the_gate_until_the_humans_sign_again(
    signed_env: Env, team: dict[str, Person]
) -> None:
    env = signed_env
    for name in ("ada", "bruno", "pres"):
        approve(env, team[name])
    old = verify(env)
    assert old["met"] is True
    # the gate value `approved` in a target
    toml = env.workspace / "oneroof.toml"
    toml.write_text(toml.read_text() + '[[target]]\nname = "signed"\ngate = "approved"\n')
    assert signed_gate(env) == {"approved": False}  # no objective names a plan
    objective = '[[objective]]\nid = "T"\ntitle = "t"\nrollout = "rollout/T_plan"\n'
    toml.write_text(toml.read_text() + objective)
    assert signed_gate(env) == {"approved": True}

    write_plan(env.plan_dir, extra="-- reviewed again\n")  # 02 edited after the approval
    rehearse(env)  # and re-rehearsed, passing
    with pytest.raises(ForbiddenAction, match="missing 2 L2, 1 L4"):
        apply(env)
    document = verify(env)
    assert document["digest"] != old["digest"]
    signatures = document["signatures"]
    assert {s["status"] for s in signatures} == {"other digest"}
    assert all("edited since: T_02_close" in s["detail"] for s in signatures)
    assert signed_gate(env) == {"approved": False}
    assert env.ledger() == []

    for name in ("ada", "bruno", "pres"):
        approve(env, team[name])
    result = apply(env)
    assert result.ok, result.to_dict()
    digests = {row[0] for row in env.prod("select digest from oneroof.rollout_ledger")}
    assert digests == {document["digest"]}
    # applied under a quorum that still verifies: `approved` holds after the apply, too
    rehearse(env)
    assert signed_gate(env) == {"approved": True}


def test_tampered_unknown_and_wrong_level_files_do_not_count(
    signed_env: Env, team: dict[str, Person]
) -> None:
    env = signed_env
    for name in ("ada", "bruno", "pres"):
        approve(env, team[name])
    folder = env.plan_dir / "approvals"
    pres_file = next(folder.glob("pres-*.json"))
    original = pres_file.read_text()

    # an edited approval file: the statement now names another clone
    data = json.loads(original)
    data["statement"] = data["statement"].replace(env.clone, "elsewhere_clone")
    pres_file.write_text(json.dumps(data, indent=2))
    with pytest.raises(ForbiddenAction, match="missing 1 L4"):
        apply(env)
    assert {s["status"] for s in verify(env)["signatures"] if s["signer"] == "pres"} == {
        "bad signature"
    }

    # the President's file signed by a key no approver holds
    statement = approvals.Statement(env.plan().name, json.loads(original)["statement"])
    pres_file.unlink()
    forged = sign(replace(team["mallory"], name="pres", level="L4"), statement, folder)
    assert forged.file.name == pres_file.name
    with pytest.raises(ForbiddenAction, match="missing 1 L4"):
        apply(env)
    statuses = {s["file"]: s["status"] for s in verify(env)["signatures"]}
    assert statuses[pres_file.name] == "unknown key"

    # an L2 key claiming the President's level
    pres_file.unlink()
    claim = json.loads(next(folder.glob("bruno-*.json")).read_text())
    claim["level"] = "L4"
    (folder / "bruno-as-l4.json").write_text(json.dumps(claim))
    with pytest.raises(ForbiddenAction, match="missing 1 L4"):
        apply(env)
    assert {s["file"]: s["status"] for s in verify(env)["signatures"]}["bruno-as-l4.json"] == (
        "wrong level"
    )

    # a malformed file is bad input, naming the file and the line
    (folder / "broken.json").write_text('{\n  "signer": \n}\n')
    broken = env.cli("rollout", "apply", str(env.plan_dir), "--execute")
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert "broken.json:3: not valid JSON" in broken.stderr
    (folder / "broken.json").unlink()

    pres_file.write_text(original)
    result = apply(env)
    assert result.ok and env.items() == {"done": 5}


@needs_ssh_keygen
def test_a_signature_made_with_ssh_keygen_is_recorded_and_opens_the_apply(
    signed_env: Env, team: dict[str, Person]
) -> None:
    assert SSH_KEYGEN is not None
    env = signed_env
    printed = env.cli("rollout", "digest", str(env.plan_dir), "--statement")
    assert printed.returncode == 0, printed.stderr
    shown = env.cli("rollout", "digest", str(env.plan_dir), "--json")
    document = json.loads(shown.stdout)
    assert document["statement"] == printed.stdout
    assert document["digest"] == approvals.digest_of(printed.stdout)
    plain = env.cli("rollout", "digest", str(env.plan_dir))
    assert plain.stdout.startswith(printed.stdout) and document["digest"] in plain.stdout

    message = env.workspace / "statement.txt"
    message.write_text(printed.stdout)
    for name in ("ada", "pres"):
        target = env.workspace / f"{name}.txt"
        shutil.copy(message, target)
        made = run(
            SSH_KEYGEN, "-Y", "sign", "-n", "oneroof", "-f", str(team[name].key), str(target)
        )
        assert made.returncode == 0, made.stderr
        recorded = env.cli(
            "approve", str(env.plan_dir), "--as", name, "--ssh-signature", f"{target}.sig"
        )
        assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    # a signature over something else, or by another's key, is refused at recording
    other = env.workspace / "other.txt"
    other.write_text("not the statement\n")
    bruno = str(team["bruno"].key)
    assert run(SSH_KEYGEN, "-Y", "sign", "-n", "oneroof", "-f", bruno, str(other)).returncode == 0
    as_bruno = ("approve", str(env.plan_dir), "--as", "bruno", "--ssh-signature")
    wrong = env.cli(*as_bruno, f"{other}.sig")
    assert wrong.returncode == 2 and "does not verify" in wrong.stderr
    theirs = env.cli(*as_bruno, str(env.workspace / "ada.txt.sig"))
    assert theirs.returncode == 2 and "not bruno's" in theirs.stderr

    approve(env, team["bruno"])
    document = verify(env)
    made_with = {
        s["signer"]: json.loads((env.plan_dir / "approvals" / s["file"]).read_text())["made_with"]
        for s in document["signatures"]
    }
    assert made_with == {"ada": "ssh-keygen", "bruno": "oneroof", "pres": "ssh-keygen"}
    assert document["met"] is True
    assert apply(env).ok


def test_nothing_to_approve_without_a_passing_rehearsal(env: Env, team: dict[str, Person]) -> None:
    toml = env.workspace / "oneroof.toml"
    toml.write_text(toml.read_text() + approver_toml(named(team)))
    evidence = env.evidence()
    try:
        with pytest.raises(NotFound, match="no rehearsal of plan T_plan"):
            approvals.approve(env.cfg, evidence, env.plan(), key=team["ada"].key)
    finally:
        evidence.close()
    digest = env.cli("rollout", "digest", str(env.plan_dir))
    assert digest.returncode == 2 and "rollout rehearse" in digest.stderr
    verified = env.cli("approvals", "verify", str(env.plan_dir))
    assert verified.returncode == 1 and "nothing to approve" in verified.stdout


@pytest.mark.parametrize("path", ["/dev/zero", "big"])
def test_a_key_or_approval_that_is_no_small_file_is_bad_input_at_once(
    tmp_path: Path, path: str
) -> None:
    target = Path(path)
    if path == "big":
        target = tmp_path / "big.json"
        target.write_bytes(b" " * (approvals.MAX_FILE_BYTES + 1))
    with pytest.raises(BadInput, match=r"regular file|more than"):
        approvals.load_private_key(target)
    with pytest.raises(BadInput, match=r"regular file|more than"):
        approvals.read_approval(target)
