"""Approvals: Ed25519 signatures over the exact plan, a quorum of them, verified at apply.

A plan's *statement* is a short canonical text naming what the humans approve: the plan,
each artifact id and checksum in order (with what its rehearsal did), the passing
rehearsal's evidence record hash, the clone's source fingerprint and the rehearsal's
forecast where it has one. Its SHA-256 is the plan's *digest*: editing an artifact, or
rehearsing it again, makes another statement and another digest.

An approval is a file `PLAN/approvals/<name>-<digest8>.json` holding the statement and an
SSH signature of it (SSHSIG, namespace `oneroof`: what `ssh-keygen -Y sign -n oneroof`
makes; `oneroof approve` makes the very same bytes with `cryptography`). Who signed is the
key, never the file's words: each `[[approver]]` of oneroof.toml names a key and a level.
The quorum (`[rollout.approval] quorum`, per plan in `[rollout.approval.plans]`) counts
distinct approvers per level whose signature is valid over the *current* digest.

Everything here is pure except reading files (keys, approvals) and `plan_approved`,
which reads the production ledger through the workspace's guarded session.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from oneroof import sshsig
from oneroof.config import Config
from oneroof.errors import BadInput, ConfigError, NotFound
from oneroof.evidence import canonical_json

if TYPE_CHECKING:
    from oneroof.evidence import Evidence, Record
    from oneroof.rollout.artifact import Plan
    from oneroof.rollout.ledger import LedgerRow
    from oneroof.workspace import Workspace

NAMESPACE = "oneroof"
DIRECTORY = "approvals"
HEADER = "oneroof approval statement v1"
FILE_FORMAT = 1
PASSPHRASE_ENV = "ONEROOF_KEY_PASSPHRASE"
BUILTIN = "approved"  # the gate value: the quorum holds for the plan

VALID = "valid"
OTHER_DIGEST = "other digest"
UNKNOWN_KEY = "unknown key"
WRONG_LEVEL = "wrong level"
BAD_SIGNATURE = "bad signature"
STATUSES = (VALID, OTHER_DIGEST, UNKNOWN_KEY, WRONG_LEVEL, BAD_SIGNATURE)

_REQUIRED_FIELDS = ("signer", "level", "digest", "statement", "signature", "signed_at")
_OPTIONAL_FIELDS = ("oneroof_approval", "plan", "comment", "made_with")
_ARTIFACT_LINE = re.compile(r"^artifact \d+: (\S+) sha256 ([0-9a-f]{64})$")
_REHEARSAL_LINE = re.compile(r"^rehearsal: evidence #(\d+)")
_PLAN_LINE = re.compile(r"^plan: (\S+)$")
# an OpenSSH public key line: its type, then the base64 blob (which always opens with AAAA)
_OPENSSH_LINE = re.compile(r"^[A-Za-z0-9@._+-]+\s+AAAA")


# -- the statement and its digest ------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """The canonical text of what is approved, and its SHA-256 (the plan digest)."""

    plan: str
    text: str
    rehearsal: int | None = None  # evidence seq of the rehearsal it names

    @property
    def digest(self) -> str:
        return digest_of(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "digest": self.digest,
            "rehearsal": self.rehearsal,
            "statement": self.text,
        }


def digest_of(text: str) -> str:
    """SHA-256 (hex) of a statement's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _one_line(value: Any) -> str:
    """A value as it appears in a statement: on one line, so no value can forge another."""
    text = str(value)
    if text.isprintable():
        return text
    return json.dumps(text)


def _rehearsed(run: Mapping[str, Any]) -> str:
    status = str(run.get("status") or "not reached")
    if status != "ok":
        reason = run.get("reason")
        return _one_line(f"{status}: {reason}" if reason else status)
    deltas: Mapping[str, Mapping[str, int]] = run.get("deltas") or {}
    if not deltas:
        return "ok, no row changed"
    changes = [
        f"{_one_line(table)} +{counts.get('inserted', 0)} ~{counts.get('updated', 0)} "
        f"-{counts.get('deleted', 0)}"
        for table, counts in sorted(deltas.items())
    ]
    return "ok, " + "; ".join(changes)


def statement(plan: Plan, record: Record) -> Statement:
    """The statement of `plan` as rehearsed in `record` (a passing rehearsal of exactly
    these checksums); `ValueError` when the record is not one."""
    payload = record.payload
    if payload.get("plan") != plan.name or payload.get("checksums") != plan.checksums:
        raise ValueError(f"evidence #{record.seq} is not a rehearsal of these exact artifacts")
    if not payload.get("ok"):
        raise ValueError(f"the rehearsal of evidence #{record.seq} failed")
    runs = {run.get("id"): run for run in payload.get("artifacts") or []}
    lines = [HEADER, f"plan: {plan.name}", f"artifacts: {len(plan.artifacts)}"]
    for number, artifact in enumerate(plan.artifacts, start=1):
        run = runs.get(artifact.id) or {}
        lines.append(f"artifact {number}: {artifact.id} sha256 {artifact.checksum}")
        lines.append(f"  rehearsed: {_rehearsed(run)}")
        if run.get("forecast") is not None:
            lines.append(f"  forecast: {canonical_json(run['forecast'])}")
    lines.append(f"rehearsal: evidence #{record.seq} at {record.at}, record sha256 {record.hash}")
    lines.append(f"clone: {_one_line(payload.get('clone'))}, residue-free")
    lines.append(f"clone source fingerprint: {_one_line(payload.get('source_fingerprint'))}")
    if payload.get("forecast") is not None:
        lines.append(f"forecast: {canonical_json(payload['forecast'])}")
    return Statement(plan.name, "\n".join(lines) + "\n", record.seq)


def current(evidence: Evidence, plan: Plan) -> tuple[Statement | None, Record | None, str]:
    """The plan's statement now — from the rehearsal an apply would use — or why there is
    none (no rehearsal of these checksums, or the latest one failed)."""
    from oneroof.rollout.rehearsal import find_rehearsal

    record, why = find_rehearsal(evidence, plan)
    found, why = of_record(plan, record, why)
    return found, record, why


def of_record(plan: Plan, record: Record | None, why: str = "") -> tuple[Statement | None, str]:
    """The statement of `plan` rehearsed in `record`, or why there is none."""
    if record is None:
        return None, why or f"no rehearsal of plan {plan.name}"
    if not record.payload.get("ok"):
        return None, (
            f"the latest rehearsal of these artifacts (evidence #{record.seq}) failed; "
            "only a passing rehearsal can be approved"
        )
    return statement(plan, record), ""


def require_current(evidence: Evidence, plan: Plan) -> Statement:
    """The plan's current statement; `NotFound` (exit 2) saying what to run when none."""
    found, _record, why = current(evidence, plan)
    if found is None:
        raise NotFound(f"nothing to approve for {plan.name}: {why}; run `oneroof rollout rehearse`")
    return found


# -- approvers and their keys ----------------------------------------------------------------


@dataclass(frozen=True)
class Approver:
    """An `[[approver]]` of oneroof.toml with its key read."""

    name: str
    level: str
    key: Ed25519PublicKey
    fingerprint: str


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from an `ssh-ed25519 …` line or PEM; `ValueError` otherwise."""
    stripped = text.strip()
    try:
        if _OPENSSH_LINE.match(stripped):
            key: object = serialization.load_ssh_public_key(stripped.encode())
        elif stripped.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(stripped.encode())
        else:
            raise ValueError("neither an `ssh-ed25519 …` line nor a PEM public key")
    except UnsupportedAlgorithm as exc:
        raise ValueError(f"unsupported key: {exc}") from None
    except ValueError as exc:
        raise ValueError(str(exc) or "not a public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"a {type(key).__name__.removeprefix('_')}, not an Ed25519 key")
    return key


# keys, signatures and approval files are small: a bigger one, a device or a FIFO is not one
MAX_FILE_BYTES = 1 << 20


def read_small(path: Path) -> bytes:
    """A key, signature or approval file's bytes; `OSError` for what is not a small file."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise OSError(0, "not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise OSError(0, f"{info.st_size:,} bytes, more than the {MAX_FILE_BYTES:,} one may hold")
    with path.open("rb") as handle:
        return handle.read(MAX_FILE_BYTES + 1)[:MAX_FILE_BYTES]


def read_text(path: Path, what: str) -> str:
    """A small UTF-8 file's text; `BadInput` naming `what` and the file otherwise."""
    try:
        return read_small(path).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise BadInput(f"cannot read {what}: {reason}", file=path) from None


def _key_text(value: str, workspace: Path) -> str:
    stripped = value.strip()
    if _OPENSSH_LINE.match(stripped) or stripped.startswith("-----BEGIN"):
        return stripped
    path = Path(stripped).expanduser()
    if not path.is_absolute():
        path = workspace / path
    try:
        return read_small(path).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ValueError(f"not a key, and no key file {path} can be read ({reason})") from None


def approvers(cfg: Config) -> list[Approver]:
    """Every `[[approver]]` with its key; `ConfigError` naming the line of a bad one."""
    result: list[Approver] = []
    names: dict[str, int] = {}
    keys: dict[str, str] = {}
    for index, entry in enumerate(cfg.approvers):
        line = cfg.line_of("approver", index, "key")
        try:
            key = parse_public_key(_key_text(entry.key, cfg.workspace))
        except ValueError as exc:
            raise ConfigError(f"approver[{index}].key: {exc}", file=cfg.file, line=line) from None
        print_ = sshsig.fingerprint(key)
        if entry.name in names:
            raise ConfigError(
                f"approver[{index}].name: {entry.name!r} is approver[{names[entry.name]}] too",
                file=cfg.file,
                line=cfg.line_of("approver", index, "name"),
            )
        if print_ in keys:
            raise ConfigError(
                f"approver[{index}].key: the key of {keys[print_]!r} too (one key, one approver)",
                file=cfg.file,
                line=line,
            )
        names[entry.name] = index
        keys[print_] = entry.name
        result.append(Approver(entry.name, entry.level, key, print_))
    return result


def required(cfg: Config) -> bool:
    """Whether apply and watch need the quorum: `[rollout.approval] required`, by default
    whether oneroof.toml names any approver."""
    setting = cfg.rollout.approval.required
    return bool(cfg.approvers) if setting is None else setting


def quorum(cfg: Config, plan_name: str) -> dict[str, int]:
    """The signatures per level the plan needs: its own rule, else the default one."""
    rule = cfg.rollout.approval.plans.get(plan_name) or cfg.rollout.approval.quorum
    return dict(rule)


def quorum_text(rule: Mapping[str, int]) -> str:
    """`L2 ×2, L4 ×1`."""
    return ", ".join(f"{level} ×{count}" for level, count in rule.items())


# -- approval files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    """One approval file: a signature over a statement, and what the file claims."""

    file: Path
    signer: str
    level: str
    digest: str
    statement: str
    signature: str  # armored SSHSIG
    signed_at: str
    comment: str = ""
    made_with: str = "oneroof"
    plan: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "oneroof_approval": FILE_FORMAT,
            "plan": self.plan,
            "signer": self.signer,
            "level": self.level,
            "digest": self.digest,
            "statement": self.statement,
            "signature": self.signature,
            "signed_at": self.signed_at,
            "comment": self.comment,
            "made_with": self.made_with,
        }


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf'^\s*"{re.escape(key)}"\s*:')
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def read_approval(path: Path) -> Approval:
    """Parse one approval file; `BadInput` (file, and line) when it is malformed."""
    text = read_text(path, "the approval file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"not valid JSON: {exc.msg}", file=path, line=exc.lineno) from None
    if not isinstance(data, dict):
        raise BadInput("an approval file holds one JSON object", file=path, line=1)
    unknown = sorted(set(data) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS))
    if unknown:
        raise BadInput(
            f"unknown key {unknown[0]!r} in an approval file",
            file=path,
            line=_line_of(text, unknown[0]),
        )
    for key in _REQUIRED_FIELDS:
        if not isinstance(data.get(key), str):
            problem = "is missing" if key not in data else "must be text"
            raise BadInput(f"{key!r} {problem}", file=path, line=_line_of(text, key))
    for key in ("plan", "comment", "made_with"):
        if key in data and not isinstance(data[key], str):
            raise BadInput(f"{key!r} must be text", file=path, line=_line_of(text, key))
    version = data.get("oneroof_approval", FILE_FORMAT)
    if version != FILE_FORMAT:
        raise BadInput(
            f"approval file format {version!r} (known: {FILE_FORMAT})",
            file=path,
            line=_line_of(text, "oneroof_approval"),
        )
    return Approval(
        file=path,
        signer=data["signer"],
        level=data["level"],
        digest=data["digest"],
        statement=data["statement"],
        signature=data["signature"],
        signed_at=data["signed_at"],
        comment=data.get("comment", ""),
        made_with=data.get("made_with", "oneroof"),
        plan=data.get("plan", ""),
    )


def directory(plan: Plan) -> Path:
    return plan.path / DIRECTORY


def read_approvals(plan: Plan) -> list[Approval]:
    """Every `approvals/*.json` of the plan folder, in name order."""
    folder = directory(plan)
    if not folder.is_dir():
        return []
    # a FIFO or a device named *.json is named as bad input, not skipped in silence
    return [read_approval(path) for path in sorted(folder.glob("*.json")) if not path.is_dir()]


def write_approval(plan: Plan, approval: Approval) -> Path:
    """Write `approvals/<signer>-<digest8>.json` (replacing the signer's earlier file of the
    same digest) and return its path."""
    folder = directory(plan)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{approval.signer}-{approval.digest[:8]}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(approval.to_dict(), indent=2, ensure_ascii=False) + "\n")
    temporary.replace(path)
    return path


# -- verification and the quorum -------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """One approval file judged: valid, for another digest, unknown key, wrong level or bad."""

    file: str
    signer: str
    level: str
    status: str
    detail: str
    signed_at: str
    digest: str
    fingerprint: str | None = None
    comment: str = ""

    @property
    def valid(self) -> bool:
        return self.status == VALID

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "signer": self.signer,
            "level": self.level,
            "status": self.status,
            "detail": self.detail,
            "signed_at": self.signed_at,
            "digest": self.digest,
            "key": self.fingerprint,
            "comment": self.comment,
        }


def _differences(signed: str, now: str) -> str:
    """What separates the version a signature was made for from the plan now."""
    old_plan = next((m.group(1) for m in map(_PLAN_LINE.match, signed.splitlines()) if m), None)
    new_plan = next((m.group(1) for m in map(_PLAN_LINE.match, now.splitlines()) if m), None)
    if old_plan != new_plan:
        return f"signed for plan {old_plan or '?'}"

    def artifacts(text: str) -> dict[str, str]:
        return {m.group(1): m.group(2) for m in map(_ARTIFACT_LINE.match, text.splitlines()) if m}

    def rehearsal(text: str) -> str | None:
        return next((m.group(1) for m in map(_REHEARSAL_LINE.match, text.splitlines()) if m), None)

    before, after = artifacts(signed), artifacts(now)
    changed = [a for a in after if a in before and before[a] != after[a]]
    added = [a for a in after if a not in before]
    removed = [a for a in before if a not in after]
    parts = []
    if changed:
        parts.append("edited since: " + ", ".join(changed))
    if added:
        parts.append("added since: " + ", ".join(added))
    if removed:
        parts.append("removed since: " + ", ".join(removed))
    if not parts and list(before) != list(after):
        parts.append("the artifacts' order changed")
    if rehearsal(signed) != rehearsal(now):
        parts.append(f"rehearsal #{rehearsal(signed) or '?'}, now #{rehearsal(now) or '?'}")
    return "another version of the plan" + (f" ({'; '.join(parts)})" if parts else "")


def judge(
    approval: Approval,
    keyed: Iterable[Approver],
    target: Statement | None,
    rule: Mapping[str, int],
) -> Signature:
    """The status of one approval against the approvers, the digest it must sign and the
    levels the quorum counts."""
    by_print = {a.fingerprint: a for a in keyed}

    def result(
        status: str, detail: str, owner: Approver | None = None, key: str | None = None
    ) -> Signature:
        return Signature(
            file=approval.file.name,
            signer=owner.name if owner else approval.signer,
            level=owner.level if owner else approval.level,
            status=status,
            detail=detail,
            signed_at=approval.signed_at,
            digest=approval.digest,
            fingerprint=key,
            comment=approval.comment,
        )

    try:
        parsed = sshsig.parse(approval.signature)
    except sshsig.SshSigError as exc:
        return result(BAD_SIGNATURE, f"the signature cannot be read: {exc}")
    owner = by_print.get(parsed.fingerprint)
    if owner is None:
        return result(
            UNKNOWN_KEY,
            f"signed with key {parsed.fingerprint}, which is no [[approver]]'s in oneroof.toml",
            key=parsed.fingerprint,
        )
    key = parsed.fingerprint
    try:
        sshsig.verify(parsed, approval.statement.encode("utf-8"), NAMESPACE)
    except sshsig.SshSigError as exc:
        return result(BAD_SIGNATURE, f"{exc} (key of {owner.name})", owner, key)
    if digest_of(approval.statement) != approval.digest:
        return result(
            BAD_SIGNATURE,
            "the file's digest is not its statement's: the file was edited",
            owner,
            key,
        )
    if approval.signer != owner.name:
        return result(
            BAD_SIGNATURE,
            f"made with {owner.name}'s key, but the file names {approval.signer!r}",
            owner,
            key,
        )
    if approval.level != owner.level:
        return result(
            WRONG_LEVEL,
            f"the file says {approval.level}; {owner.name} is {owner.level} in oneroof.toml",
            owner,
            key,
        )
    if owner.level not in rule:
        return result(
            WRONG_LEVEL,
            f"{owner.level} counts for nothing in this plan's quorum ({quorum_text(rule)})",
            owner,
            key,
        )
    if target is None:
        return result(OTHER_DIGEST, "the plan has no current digest to compare with", owner, key)
    if approval.digest != target.digest:
        return result(OTHER_DIGEST, _differences(approval.statement, target.text), owner, key)
    return result(
        VALID, f"{owner.name} ({owner.level}) signed digest {target.digest[:12]}…", owner, key
    )


@dataclass
class Verification:
    """Every approval of a plan judged against its digest, and whether the quorum holds."""

    plan: str
    required: bool
    quorum: dict[str, int]
    statement: Statement | None
    why: str = ""  # why there is no statement
    signatures: list[Signature] = field(default_factory=list)
    quorum_possible: bool = True  # some [[approver]] exists

    @property
    def digest(self) -> str | None:
        return self.statement.digest if self.statement is not None else None

    @property
    def counted(self) -> dict[str, list[Signature]]:
        """Per level, the first valid signature of each distinct approver."""
        result: dict[str, list[Signature]] = {}
        seen: set[str] = set()
        for signature in self.signatures:
            if signature.valid and signature.signer not in seen:
                seen.add(signature.signer)
                result.setdefault(signature.level, []).append(signature)
        return result

    @property
    def missing(self) -> dict[str, int]:
        counted = self.counted
        return {
            level: need - len(counted.get(level, []))
            for level, need in self.quorum.items()
            if len(counted.get(level, [])) < need
        }

    @property
    def met(self) -> bool:
        """The quorum holds: enough valid signatures over the current digest."""
        return self.statement is not None and not self.missing

    @property
    def ok(self) -> bool:
        return self.met

    @property
    def signers(self) -> list[dict[str, str]]:
        """Who approved the current digest, and when (what the ledger records)."""
        return [
            {"signer": s.signer, "level": s.level, "signed_at": s.signed_at, "file": s.file}
            for level in self.quorum
            for s in self.counted.get(level, [])
        ]

    def summary(self) -> str:
        """One line: met and by whom, or what is missing."""
        if self.statement is None:
            return f"nothing to approve: {self.why}"
        digest = f"digest {self.statement.digest[:12]}…"
        if self.met:
            who = ", ".join(f"{s['signer']} ({s['level']}, {s['signed_at']})" for s in self.signers)
            return f"quorum {quorum_text(self.quorum)} met over {digest}: {who}"
        wanted = ", ".join(f"{count} {level}" for level, count in self.missing.items())
        text = f"quorum {quorum_text(self.quorum)} not met over {digest}: missing {wanted}"
        text += " signature(s)"
        have = [s["signer"] for s in self.signers]
        if have:
            text += f"; valid: {', '.join(have)}"
        others = [s for s in self.signatures if not s.valid]
        if others:
            text += "; not counted: " + ", ".join(f"{s.file} ({s.status})" for s in others[:6])
        if not self.signatures and not self.quorum_possible:
            text += " (no [[approver]] in oneroof.toml)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "required": self.required,
            "quorum": self.quorum,
            "digest": self.digest,
            "statement": self.statement.text if self.statement is not None else None,
            "rehearsal": self.statement.rehearsal if self.statement is not None else None,
            "why": self.why or None,
            "met": self.met,
            "missing": self.missing,
            "signers": self.signers,
            "signatures": [s.to_dict() for s in self.signatures],
            "summary": self.summary(),
        }


def verify(
    cfg: Config,
    plan_name: str,
    target: Statement | None,
    files: Iterable[Approval],
    *,
    why: str = "",
) -> Verification:
    """Judge every approval against `target` (the digest that must be signed) and the quorum."""
    keyed = approvers(cfg)
    rule = quorum(cfg, plan_name)
    signatures = [judge(approval, keyed, target, rule) for approval in files]
    return Verification(
        plan=plan_name,
        required=required(cfg),
        quorum=rule,
        statement=target,
        why=why,
        signatures=signatures,
        quorum_possible=bool(keyed),
    )


def evaluate(
    cfg: Config, evidence: Evidence, plan: Plan, *, record: Record | None = None
) -> Verification:
    """The plan's approvals against its current digest (from `record`, by default the
    rehearsal an apply would use)."""
    if record is None:
        target, _found, why = current(evidence, plan)
    else:
        target, why = of_record(plan, record)
    return verify(cfg, plan.name, target, read_approvals(plan), why=why)


# -- signing ---------------------------------------------------------------------------------


def load_private_key(path: Path, passphrase: str | None = None) -> Ed25519PrivateKey:
    """An Ed25519 private key from an OpenSSH or PEM file; `BadInput` naming the file."""
    try:
        data = read_small(path.expanduser())
    except OSError as exc:
        raise BadInput(f"cannot read the key: {exc.strerror or exc}", file=path) from None
    secret = (passphrase if passphrase is not None else os.environ.get(PASSPHRASE_ENV, "")) or None
    password = secret.encode() if secret is not None else None

    def load(password: bytes | None) -> object:
        if b"BEGIN OPENSSH PRIVATE KEY" in data:
            return serialization.load_ssh_private_key(data, password)
        return serialization.load_pem_private_key(data, password)

    try:
        try:
            key = load(password)
        except TypeError:
            if password is None:
                raise
            key = load(None)  # the passphrase in the environment is another key's
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise BadInput(
            f"cannot use the key ({exc}): for a passphrase set {PASSPHRASE_ENV}, or sign with "
            "ssh-keygen (`oneroof rollout digest PLAN --statement > s && ssh-keygen -Y sign -n "
            "oneroof -f KEY s`) and record it with `oneroof approve PLAN --as NAME "
            "--ssh-signature s.sig`",
            file=path,
        ) from None
    except ValueError as exc:
        raise BadInput(f"not a private key: {exc}", file=path) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"a {type(key).__name__.removeprefix('_')}, not an Ed25519 key", file=path)
    return key


def approver_of(cfg: Config, fingerprint: str, name: str | None) -> Approver:
    """The approver whose key has `fingerprint` (and who is `name`, when given)."""
    keyed = approvers(cfg)
    if name is not None:
        chosen = next((a for a in keyed if a.name == name), None)
        if chosen is None:
            known = ", ".join(a.name for a in keyed) or "none defined"
            raise BadInput(
                f"no [[approver]] named {name!r} (approvers: {known})",
                file=cfg.file,
                line=cfg.line_of("approver"),
            )
        if chosen.fingerprint != fingerprint:
            raise BadInput(
                f"the key {fingerprint} is not {name}'s ({chosen.fingerprint} in oneroof.toml)"
            )
        return chosen
    owner = next((a for a in keyed if a.fingerprint == fingerprint), None)
    if owner is None:
        raise BadInput(
            f"the key {fingerprint} is no [[approver]]'s in oneroof.toml; add it there first",
            file=cfg.file,
        )
    return owner


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sign(
    target: Statement,
    private_key: Ed25519PrivateKey,
    approver: Approver,
    *,
    comment: str = "",
    signed_at: str | None = None,
) -> Approval:
    """An approval of `target` signed with `private_key` (not yet written)."""
    signature = sshsig.sign(private_key, target.text.encode("utf-8"), NAMESPACE)
    return Approval(
        file=Path(f"{approver.name}-{target.digest[:8]}.json"),
        signer=approver.name,
        level=approver.level,
        digest=target.digest,
        statement=target.text,
        signature=signature,
        signed_at=signed_at or _now(),
        comment=comment,
        made_with="oneroof",
        plan=target.plan,
    )


@dataclass
class ApproveResult:
    """`oneroof approve`: the file written, its signature's status and the quorum after."""

    file: Path
    signature: Signature
    verification: Verification

    @property
    def ok(self) -> bool:
        return self.signature.valid

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.file),
            "signature": self.signature.to_dict(),
            "verification": self.verification.to_dict(),
        }


def approve(
    cfg: Config,
    evidence: Evidence,
    plan: Plan,
    *,
    key: Path | None = None,
    name: str | None = None,
    ssh_signature: Path | None = None,
    comment: str = "",
) -> ApproveResult:
    """Sign the plan's current statement with `key`, or record `ssh_signature` made over it
    with `ssh-keygen -Y sign -n oneroof`; write the approval file."""
    if (key is None) == (ssh_signature is None):
        raise BadInput("give either --key PATH or --ssh-signature FILE (with --as NAME)")
    if ssh_signature is not None and name is None:
        raise BadInput("--ssh-signature needs --as NAME: the approver who signed")
    target = require_current(evidence, plan)
    if key is not None:
        private = load_private_key(key)
        owner = approver_of(cfg, sshsig.fingerprint(private.public_key()), name)
        approval = sign(target, private, owner, comment=comment)
    else:
        assert ssh_signature is not None and name is not None
        approval = _recorded(cfg, target, ssh_signature, name, comment)
    path = write_approval(plan, approval)
    written = read_approval(path)
    rule = quorum(cfg, plan.name)
    status = judge(written, approvers(cfg), target, rule)
    return ApproveResult(path, status, evaluate(cfg, evidence, plan))


def _recorded(cfg: Config, target: Statement, file: Path, name: str, comment: str) -> Approval:
    text = read_text(file, "the signature")
    try:
        parsed = sshsig.parse(text)
    except sshsig.SshSigError as exc:
        raise BadInput(f"not an SSH signature (ssh-keygen -Y sign): {exc}", file=file) from None
    owner = approver_of(cfg, parsed.fingerprint, name)
    try:
        sshsig.verify(parsed, target.text.encode("utf-8"), NAMESPACE)
    except sshsig.SshSigError as exc:
        raise BadInput(
            f"{exc} of {target.plan} now (digest {target.digest[:12]}…): sign exactly what "
            f"`oneroof rollout digest {target.plan} --statement` prints, with -n {NAMESPACE}",
            file=file,
        ) from None
    return Approval(
        file=file,
        signer=owner.name,
        level=owner.level,
        digest=target.digest,
        statement=target.text,
        signature=text if text.endswith("\n") else text + "\n",
        signed_at=_now(),
        comment=comment,
        made_with="ssh-keygen",
        plan=target.plan,
    )


# -- the `approved` gate value -----------------------------------------------------------------


def applied_under_approval(
    cfg: Config, plan: Plan, ledger: Mapping[str, LedgerRow], files: list[Approval]
) -> bool:
    """True when every artifact of the plan is in the ledger as it is now, and the digest(s)
    each was applied under still carry a valid quorum (the plan was applied as approved)."""
    if not plan.artifacts:
        return False
    rows = [ledger.get(a.id) for a in plan.artifacts]
    pairs = zip(rows, plan.artifacts, strict=True)
    if any(row is None or row.checksum != a.checksum for row, a in pairs):
        return False
    digests = {row.digest for row in rows if row is not None}
    if None in digests:
        return False
    for digest in digests:
        text = next((f.statement for f in files if f.digest == digest), None)
        if text is None or digest_of(text) != digest:
            return False
        if not verify(cfg, plan.name, Statement(plan.name, text), files).met:
            return False
    return True


def plan_approved(ws: Workspace, plan: Plan) -> bool:
    """The gate value `approved` of one plan: the quorum holds over its current digest, or
    the plan is fully applied and was applied under a quorum that still verifies."""
    verification = evaluate(ws.cfg, ws.evidence, plan)
    if verification.met:
        return True
    from oneroof.rollout.ledger import read_ledger

    with ws.production() as session, session.transaction():
        ledger = read_ledger(session, plan.name, schema=ws.cfg.rollout.ledger_schema)
    return applied_under_approval(ws.cfg, plan, ledger, read_approvals(plan))


def targets_approved(ws: Workspace) -> bool:
    """`approved` in a `[[target]]` gate: every plan an objective names (`rollout = …`) is
    approved; false when no objective names one."""
    from oneroof.rollout.artifact import load_plan

    plans = [Path(o.rollout) for o in ws.cfg.objectives if o.rollout]
    if not plans:
        return False
    for entry in plans:
        plan = load_plan(entry if entry.is_absolute() else ws.cfg.workspace / entry, ws.cfg)
        if not plan_approved(ws, plan):
            return False
    return True


def raw_signature(approval: Approval) -> str:
    """The hex of the Ed25519 signature inside an approval (what a database may record)."""
    return sshsig.parse(approval.signature).signature.hex()
