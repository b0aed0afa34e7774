"""The read-only HTTP API and its dashboard, over the workspace's evidence store.

It serves what the campaigns measured — every campaign's report, the audit log and its
chain verdict, saved fingerprints, check runs, rehearsals, any record by its sequence
number — and never opens a database connection: the evidence store is its only source,
opened read-only for each request. One table, `ENDPOINTS`, declares every path, its query
parameters and the JSON Schema of its answer; the routes, the index at `/api` and the
OpenAPI document at `/api/openapi.json` are all made from it, so they cannot disagree.

Only GET and HEAD exist. An unknown path is 404 whatever the method; a known path asked
with another method is 405. Every JSON error has the one shape
`{"error": {"status": N, "message": "..."}}` — `OneroofError`s mapped once, by their
status; dashboard pages answer their errors as HTML pages with the same status. Lists are
newest first (`?order=asc` reverses them) and page with exclusive sequence-number bounds
(`before`, `after`), so records appended meanwhile never shift a page.
"""

from __future__ import annotations

import errno
import json
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from oneroof import __version__, report
from oneroof.config import Config
from oneroof.errors import BadInput, NotFound, OneroofError, UnusableStore
from oneroof.evidence import Evidence, Record

MAX_LIMIT = 1000
SEQ_MAX = 2**63 - 1  # SQLite's largest integer: a bound past it is no sequence number
EVIDENCE_PAGE = "/evidence/{seq}"  # the dashboard's view of one record; reports link here
EVIDENCE_JSON = "/api/evidence/{seq}"
REPORT_PAGE = "/reports/{seq}"
REPORT_JSON = "/api/reports/{seq}"
READ_METHODS = ("GET", "HEAD")
# the pages carry no script; their only inline code is the report's own stylesheet
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'"
_DIGITS = re.compile(r"[0-9]+")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape of the API."""
    return JSONResponse(
        {"error": {"status": status, "message": message}}, status_code=status, headers=headers
    )


# --- the schemas of the answers (JSON Schema 2020-12, as OpenAPI 3.1 embeds it) ----------


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


def _typed(kind: str, *names: str) -> dict[str, Any]:
    """Properties that all have the one JSON type `kind`."""
    return {name: {"type": kind} for name in names}


def _object(properties: dict[str, Any], *, closed: bool = True) -> dict[str, Any]:
    """An object with every listed property required; `closed` forbids any other."""
    return {
        "type": "object",
        "required": sorted(properties),
        "properties": properties,
        "additionalProperties": not closed,
    }


_SEQ = {"type": "integer", "minimum": 1}
_HASH = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_ROW = {
    "seq": _SEQ,
    "at": {"type": "string", "description": "when the record was appended (UTC, ISO 8601)"},
    "url": {"type": "string", "description": "the record's page: /evidence/{seq}"},
}
_STRINGS = {"type": "array", "items": {"type": "string"}}
# one tuple for the report and its row in the history, so that the two cannot differ
_REPORT_HEAD = ("title", "generated_at", "final_status", "headline")

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "message": {"type": "string", "minLength": 1},
                }
            )
        }
    ),
    "Record": _object(
        {
            **_ROW,
            "kind": {"type": "string"},
            "role": _nullable("string"),
            "classification": _nullable("string"),
            "outcome": _nullable("string"),
            "sql": _nullable("string"),
            "payload": {"type": "object"},
            "prev_hash": _HASH,
            "hash": _HASH,
        }
    ),
    "AsOf": {
        "description": "the newest record of the store (null: nothing has run yet)",
        "oneOf": [{"type": "null"}, _object({"seq": _SEQ, "at": {"type": "string"}})],
    },
    "Verdict": _object(
        {
            **_typed("string", "objective", "status", "label", "headline"),
            "qualifier": _nullable("string"),
            "reasons": _STRINGS,
        },
        closed=False,
    ),
    "MatrixRow": _object(
        {
            **_typed("string", "target", "status", "gate"),
            "values": {"type": "object"},
        },
        closed=False,
    ),
    "Report": _object(
        {
            **_typed("string", *_REPORT_HEAD),
            "verdicts": {"type": "array", "items": _ref("Verdict")},
            "matrix": {"type": "array", "items": _ref("MatrixRow")},
            # their items are the report's own to shape (text, or objects naming a target)
            "blockers": {"type": "array"},
            "next_macros": {"type": "array"},
            "compliance": {
                "type": "object",
                "required": ["percent"],
                "properties": {"percent": {"type": "integer", "minimum": 0, "maximum": 100}},
            },
            # [{name, value, evidence}, …] in the report's one order (an older report: an object)
            "facts": {"type": ["array", "object"]},
            "notes": _STRINGS,
        },
        closed=False,
    ),
    "ReportSummary": _object(
        {
            **_ROW,
            "report_url": {"type": "string", "description": "the report page: /reports/{seq}"},
            "api_url": {"type": "string", "description": "the report: /api/reports/{seq}"},
            **_typed("string", *_REPORT_HEAD),
        }
    ),
    "AuditVerification": _object(
        {
            "intact": {"type": "boolean"},
            "records": {"type": "integer", "minimum": 0},
            "problems": _STRINGS,
        }
    ),
    "Fingerprint": _object(
        {
            **_ROW,
            "id": {"type": "string"},
            "short": {"type": "string"},
            "label": _nullable("string"),
            "mode": _nullable("string"),
            "database": _nullable("string"),
            "taken_at": _nullable("string"),
            "wal": _nullable("string"),
        }
    ),
    "Totals": _object(
        {
            "passed": {"type": "integer", "minimum": 0},
            "total": {
                "type": "integer",
                "minimum": 0,
                "description": "checks and assertions that apply to the target",
            },
            "by_status": {"type": "object", "additionalProperties": {"type": "integer"}},
        }
    ),
    "CheckRun": _object(
        {
            **_ROW,
            "objective": _nullable("string"),
            "target": {"type": "string"},
            "database": _nullable("string"),
            "verdict": {"type": "string"},
            "totals": _ref("Totals"),
            "residue_free": _nullable("boolean"),
            "summary": _nullable("string"),
        }
    ),
    "Rehearsal": _object(
        {
            **_ROW,
            "plan": {"type": "string"},
            "ok": {"type": "boolean"},
            "clone": _nullable("string"),
            "residue_free": _nullable("boolean"),
            "touched_tables": _STRINGS,
        }
    ),
    "Index": _object(
        {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "read_only": {"const": True},
            "methods": _STRINGS,
            "as_of": _ref("AsOf"),
            "openapi": {"type": "string"},
            "evidence_url": {"type": "string"},
            "error": {"type": "object"},
            "lists": {"type": "object"},
            "endpoints": {"type": "array", "items": {"type": "object"}},
            "pages": {"type": "array", "items": {"type": "object"}},
        }
    ),
    "OpenAPI": {"type": "object", "required": ["openapi", "info", "paths", "components"]},
}


# --- parameters --------------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """One query or path parameter: its schema is what the server accepts, exactly."""

    name: str
    location: Literal["query", "path"]
    schema: dict[str, Any]
    description: str

    def parse(self, raw: str) -> int | str:
        """The value of `raw`, or BadInput naming the parameter and what it accepts."""
        if "enum" in self.schema:
            if raw not in self.schema["enum"]:
                choices = " or ".join(self.schema["enum"])
                raise BadInput(f"{self.name} must be {choices}, not {raw!r}")
            return raw
        low, high = self.schema["minimum"], self.schema["maximum"]
        wanted = f"{self.name} must be an integer from {low} to {high}, not {raw[:40]!r}"
        digits = raw.lstrip("0") or "0"  # int() refuses thousands of digits, zeros or not
        if not _DIGITS.fullmatch(raw) or len(digits) > len(str(high)):
            raise BadInput(wanted)
        value = int(digits)
        if not low <= value <= high:
            raise BadInput(wanted)
        return value

    def to_openapi(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.location,
            "required": self.location == "path",
            "description": self.description,
            "schema": self.schema,
        }


SEQ = Parameter(
    "seq", "path", {"type": "integer", "minimum": 1, "maximum": SEQ_MAX}, "a record's number"
)


def _paging(default_limit: int) -> tuple[Parameter, ...]:
    return (
        Parameter(
            "limit",
            "query",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": default_limit},
            "how many records at most",
        ),
        Parameter(
            "order",
            "query",
            {"type": "string", "enum": ["desc", "asc"], "default": "desc"},
            "desc: newest first; asc: oldest first (the limit takes from that end)",
        ),
        Parameter(
            "before",
            "query",
            {"type": "integer", "minimum": 0, "maximum": SEQ_MAX},
            "only records whose seq is lower (the last seq of a newest-first page)",
        ),
        Parameter(
            "after",
            "query",
            {"type": "integer", "minimum": 0, "maximum": SEQ_MAX},
            "only records whose seq is higher (the last seq of an oldest-first page)",
        ),
    )


# --- the store of one request ------------------------------------------------------------


class Store:
    """The evidence store as one request sees it: opened read-only on first use, then closed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._evidence: Evidence | None = None

    def evidence(self) -> Evidence:
        if self._evidence is None:
            # read-only: a GET never creates the store nor writes to it
            self._evidence = Evidence(self.path, read_only=True)
        return self._evidence

    def close(self) -> None:
        if self._evidence is not None:
            self._evidence.close()
            self._evidence = None

    def as_of(self) -> Record | None:
        """The newest record, the time every page is "as of"; None when nothing has run."""
        try:
            store = self.evidence()
            return store.record(store.last_seq())
        except OneroofError:
            return None

    def page(self, kind: str, args: dict[str, Any]) -> list[Record]:
        """The records of `kind` a list's checked parameters ask for."""
        return self.evidence().page(
            kind,
            limit=args["limit"],
            newest_first=args["order"] == "desc",
            before=args.get("before"),
            after=args.get("after"),
        )

    def record(self, seq: int) -> Record:
        """The record numbered `seq`, or NotFound saying which numbers there are."""
        found = self.evidence().record(seq)
        if found is None:
            last = self.evidence().last_seq()
            held = f"records 1 to {last}" if last else "no record yet"
            raise NotFound(f"no record {seq}: the evidence store holds {held}")
        return found

    def campaign(self, seq: int | None = None) -> tuple[Record, report.Report]:
        """A campaign's record and its report: the newest, or the one numbered `seq`."""
        if seq is None:
            found = self.evidence().latest("campaign")
            if found is None:
                raise NotFound("no campaign has run in this workspace yet")
        else:
            found = self.record(seq)
            if found.kind != "campaign":
                raise NotFound(
                    f"record {seq} is of kind {found.kind}, not a campaign's report "
                    f"(its evidence: {EVIDENCE_JSON.format(seq=seq)})"
                )
        try:
            return found, report.Report.from_dict(found.payload["report"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UnusableStore(
                f"record {found.seq} holds a report this version cannot read "
                f"({type(exc).__name__}: {exc})"
            ) from None


# --- rows of the lists -------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _row(record: Record) -> dict[str, Any]:
    return {"seq": record.seq, "at": record.at, "url": EVIDENCE_PAGE.format(seq=record.seq)}


def record_json(record: Record) -> dict[str, Any]:
    """A record as the API shows it: every field, and its page."""
    return {**record.as_dict(), "url": EVIDENCE_PAGE.format(seq=record.seq)}


def report_row(record: Record) -> dict[str, Any]:
    """A campaign in the report history: its report's title, status and headline."""
    found = record.payload.get("report") or {}
    return {
        **_row(record),
        "report_url": REPORT_PAGE.format(seq=record.seq),
        "api_url": REPORT_JSON.format(seq=record.seq),
        **{key: str(found.get(key, "")) for key in _REPORT_HEAD},
    }


def fingerprint_row(record: Record) -> dict[str, Any]:
    """A saved fingerprint without its sections: id, label, mode, database, WAL position."""
    payload = record.payload
    fid = str(payload.get("id", ""))
    return {
        **_row(record),
        "id": fid,
        "short": str(payload.get("short") or fid[:8]),
        "label": _text(payload.get("label")),
        "mode": _text(payload.get("mode")),
        "database": _text(payload.get("database")),
        "taken_at": _text(payload.get("taken_at")),
        "wal": _text(payload.get("wal")),
    }


def totals(payload: dict[str, Any]) -> dict[str, Any]:
    """A check run's figures: passed of total applicable, and the count of every status."""
    by_status = {str(k): int(v) for k, v in (payload.get("counts") or {}).items()}
    applicable = sum(v for k, v in by_status.items() if k != "not applicable")
    passed = payload.get("passed", by_status.get("passed", 0))
    total = payload.get("total", applicable)
    return {"passed": int(passed), "total": int(total), "by_status": by_status}


def check_run_row(record: Record) -> dict[str, Any]:
    """A check run without its items: objective, target, verdict, totals, residue."""
    payload = record.payload
    return {
        **_row(record),
        "objective": _text(payload.get("objective")),
        "target": str(payload.get("target") or record.role or ""),
        "database": _text(payload.get("database")),
        "verdict": str(payload.get("verdict") or record.outcome or ""),
        "totals": totals(payload),
        "residue_free": _flag(payload.get("residue_free")),
        "summary": _text(payload.get("summary")),
    }


def rehearsal_row(record: Record) -> dict[str, Any]:
    """A rehearsal without its artifacts: plan, outcome, clone, residue, tables touched."""
    payload = record.payload
    return {
        **_row(record),
        "plan": str(payload.get("plan", "")),
        "ok": payload.get("ok") is True,
        "clone": _text(payload.get("clone")),
        "residue_free": _flag(payload.get("residue_free")),
        "touched_tables": [str(t) for t in payload.get("touched_tables") or []],
    }


@dataclass(frozen=True)
class Listing:
    """One kind of record listed newest first: its JSON path, its page, its row."""

    kind: str
    path: str
    page: str
    title: str
    schema: str
    row: Callable[[Record], dict[str, Any]]
    default_limit: int = 20


LISTINGS = (
    Listing("campaign", "/api/reports", "/reports", "Report history", "ReportSummary", report_row),
    Listing("audit", "/api/audit", "/audit", "Audit log", "Record", record_json, 100),
    Listing(
        "fingerprint", "/api/fingerprints", "/fingerprints", "Fingerprints", "Fingerprint",
        fingerprint_row,
    ),
    Listing("check-run", "/api/check-runs", "/check-runs", "Check runs", "CheckRun", check_run_row),
    Listing(
        "rehearsal", "/api/rehearsals", "/rehearsals", "Rehearsals", "Rehearsal", rehearsal_row
    ),
)  # fmt: skip


# --- the dashboard's pages ---------------------------------------------------------------

_PAGES = Environment(
    loader=PackageLoader("oneroof", "templates/dashboard"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_BODY = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_HEAD_END = re.compile(r"</head\s*>", re.IGNORECASE)
_DOCTYPE = re.compile(r"\s*<!doctype[^>]*>", re.IGNORECASE)


def _when(stamp: str | None) -> str:
    """A stored UTC time as people read it: `2026-11-24 09:15:02 UTC`."""
    if not stamp:
        return ""
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return stamp


_PAGES.filters["when"] = _when
_PAGES.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
_PAGES.globals["nav_items"] = [("/", "Report")] + [(x.page, x.title) for x in LISTINGS]


def page(template: str, as_of: Record | None, active: str, **context: Any) -> str:
    """A dashboard page: the layout with its navigation and "as of" line around `template`."""
    return _PAGES.get_template(template).render(as_of=as_of, active=active, **context)


def wrap_report(document: str, as_of: Record | None, active: str, campaign: Record) -> str:
    """The report page exactly as `report.render` made it, with the dashboard's bar on top.

    Only two fragments are added — the bar's stylesheet at the end of the head and the bar
    at the start of the body — so whatever the report's template becomes, its page is its own.
    """
    style = _PAGES.get_template("_bar_style.html.j2").render()
    bar = _PAGES.get_template("_bar.html.j2").render(
        as_of=as_of, active=active, campaign=campaign, report_page=True
    )
    head_end = _HEAD_END.search(document)
    if head_end is not None:
        document = document[: head_end.start()] + style + document[head_end.start() :]
    else:
        bar = style + bar
    body = _BODY.search(document)
    if body is not None:
        at = body.end()
    elif head_end is not None:
        at = head_end.end() + len(style)
    else:
        doctype = _DOCTYPE.match(document)
        at = doctype.end() if doctype is not None else 0
    return document[:at] + "\n" + bar + document[at:]


def _link(path: str, args: dict[str, Any], **changes: Any) -> str:
    merged = {**{k: v for k, v in args.items() if k in ("limit", "order")}, **changes}
    return path + "?" + urlencode({k: v for k, v in merged.items() if v is not None})


def _pager(path: str, args: dict[str, Any], rows: list[Record]) -> dict[str, str | None]:
    """Links to the next page (further from the newest or oldest end) and back to the start."""
    further: str | None = None
    if len(rows) == args["limit"]:
        last = rows[-1].seq
        key = "before" if args["order"] == "desc" else "after"
        further = _link(path, args, **{key: last})
    paged = args.get("before") is not None or args.get("after") is not None
    return {"further": further, "start": _link(path, args) if paged else None}


# --- the endpoints -----------------------------------------------------------------------

Handler = Callable[["Store", dict[str, Any]], Any]


@dataclass(frozen=True)
class Endpoint:
    """One path of the server: what it answers, from what, with which parameters."""

    path: str
    summary: str
    handler: Handler
    parameters: tuple[Parameter, ...] = ()
    schema: dict[str, Any] | None = None  # the answer's JSON Schema; None: an HTML page
    missing: str | None = None  # when it may be 404: what is missing then
    description: str = ""

    @property
    def html(self) -> bool:
        return self.schema is None

    def arguments(self, request: Request) -> dict[str, Any]:
        """The request's parameters, checked against their schema, with their defaults."""
        known = {p.name: p for p in self.parameters}
        args: dict[str, Any] = {p.name: p.schema.get("default") for p in self.parameters}
        for name, raw in request.path_params.items():
            args[name] = known[name].parse(raw)
        for name in dict.fromkeys(request.query_params.keys()):
            given = request.query_params.getlist(name)
            parameter = known.get(name)
            if parameter is None or parameter.location != "query":
                accepted = [p.name for p in self.parameters if p.location == "query"]
                takes = f"use {', '.join(accepted)}" if accepted else "it takes none"
                raise BadInput(f"{self.path} has no query parameter {name[:40]!r}: {takes}")
            if len(given) > 1:
                raise BadInput(f"{name} is given {len(given)} times: give it once")
            args[name] = parameter.parse(given[0])
        return args

    def to_openapi(self) -> dict[str, Any]:
        media = "text/html" if self.html else "application/json"
        content = {"schema": {"type": "string"} if self.html else self.schema}

        def failure(why: str) -> dict[str, Any]:
            schema = {"type": "string"} if self.html else _ref("Error")
            return {"description": why, "content": {media: {"schema": schema}}}

        responses: dict[str, Any] = {
            "200": {"description": self.summary, "content": {media: content}}
        }
        if self.parameters:
            responses["400"] = failure("a parameter is not what its schema accepts")
        if self.missing:
            responses["404"] = failure(self.missing)
        responses["default"] = failure("the evidence store cannot be read (500)")
        operation = {
            "operationId": ("page" if self.html else "get")
            + re.sub(r"\W+", "_", self.path).rstrip("_"),
            "tags": ["dashboard" if self.html else "api"],
            "summary": self.summary,
            "parameters": [p.to_openapi() for p in self.parameters],
            "responses": responses,
        }
        if self.description:
            operation["description"] = self.description
        return {"get": operation}


def _listing_json(listing: Listing) -> Handler:
    def handler(store: Store, args: dict[str, Any]) -> Any:
        return [listing.row(r) for r in store.page(listing.kind, args)]

    return handler


def _listing_page(listing: Listing) -> Handler:
    def handler(store: Store, args: dict[str, Any]) -> Any:
        records = store.page(listing.kind, args)
        context: dict[str, Any] = {}
        if listing.kind == "audit":
            problems = store.evidence().verify()
            context["chain"] = {"intact": not problems, "problems": problems}
            context["count"] = store.evidence().last_seq()
        return page(
            f"{listing.page.strip('/').replace('-', '_')}.html.j2",
            store.as_of(),
            listing.page,
            title=listing.title,
            rows=[listing.row(r) for r in records],
            args=args,
            pager=_pager(listing.page, args, records),
            **context,
        )

    return handler


def _verify(store: Store, args: dict[str, Any]) -> Any:
    evidence = store.evidence()
    problems = evidence.verify()
    return {"intact": not problems, "records": evidence.last_seq(), "problems": problems}


def _report(store: Store, args: dict[str, Any]) -> Any:
    return store.campaign(args.get("seq"))[1].to_dict()


def _report_page(store: Store, args: dict[str, Any]) -> Any:
    record, found = store.campaign(args.get("seq"))
    active = "/" if "seq" not in args else "/reports"
    return wrap_report(report.render(found, "html"), store.as_of(), active, record)


def _evidence(store: Store, args: dict[str, Any]) -> Any:
    return record_json(store.record(args["seq"]))


def _evidence_page(store: Store, args: dict[str, Any]) -> Any:
    record = store.record(args["seq"])
    evidence = store.evidence()
    problems = evidence.verify()
    mine = [p for p in problems if re.match(rf"record {record.seq}\b", p)]
    return page(
        "evidence.html.j2",
        store.as_of(),
        "",
        title=f"Record {record.seq}",
        record=record,
        chain={"intact": not problems, "problems": problems, "this_record": mine},
        previous=record.seq - 1 if record.seq > 1 else None,
        following=record.seq + 1 if record.seq < evidence.last_seq() else None,
        items=_check_items(record),
        report_url=REPORT_PAGE.format(seq=record.seq) if record.kind == "campaign" else None,
    )


def _check_items(record: Record) -> list[dict[str, Any]]:
    """A check run's items as rows of the evidence page (empty for other kinds)."""
    if record.kind != "check-run":
        return []
    rows = []
    for file in record.payload.get("files") or []:
        for item in file.get("items") or []:
            detail = item.get("message") or ""
            if item.get("status") == "failed":
                detail = f"expected {item.get('expected')}, got {item.get('got')}"
            rows.append({**item, "path": file.get("path", ""), "detail": detail})
    return rows


def _index(store: Store, args: dict[str, Any]) -> Any:
    as_of = store.as_of()
    return {
        "name": "oneroof read-only API",
        "version": __version__,
        "read_only": True,
        "methods": list(READ_METHODS),
        "as_of": {"seq": as_of.seq, "at": as_of.at} if as_of is not None else None,
        "openapi": "/api/openapi.json",
        "evidence_url": EVIDENCE_PAGE,
        "error": {
            "shape": {"error": {"status": "the HTTP status", "message": "one line"}},
            "statuses": {
                "400": "a query or path parameter is not what its schema accepts",
                "404": "no such path (whatever the method), or no such record or campaign yet",
                "405": "a known path asked with a method other than GET or HEAD",
                "500": "the evidence store cannot be read",
            },
        },
        "lists": {
            "order": "newest first; ?order=asc for oldest first",
            "paging": "?before=SEQ (newest first) or ?after=SEQ (oldest first), exclusive",
            "limit": f"?limit=N, 1 to {MAX_LIMIT}",
        },
        "endpoints": [_describe(e) for e in ENDPOINTS if not e.html],
        "pages": [_describe(e) for e in ENDPOINTS if e.html],
    }


def _describe(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "path": endpoint.path,
        "summary": endpoint.summary,
        "parameters": {p.name: p.description for p in endpoint.parameters if p.location == "query"},
    }


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every endpoint and page, made from `ENDPOINTS`."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "oneroof read-only API",
            "version": __version__,
            "description": (
                "What oneroof's campaigns measured, read from the workspace's evidence store. "
                "Only GET and HEAD: any other method on a known path is 405, an unknown path "
                "404 whatever the method. Every JSON error is "
                '{"error": {"status": N, "message": "..."}}. Lists are newest first.'
            ),
        },
        "paths": {e.path: e.to_openapi() for e in ENDPOINTS},
        "components": {"schemas": SCHEMAS},
    }


def _openapi(store: Store, args: dict[str, Any]) -> Any:
    return openapi()


_NO_CAMPAIGN = "no campaign has run in this workspace yet, or no evidence store"
_NO_RECORD = "no record with that number"
_NO_STORE = "nothing has run in this workspace yet: there is no evidence store"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/api", "this index: endpoints, pages, the error shape", _index, schema=_ref("Index")),
    Endpoint("/api/openapi.json", "the OpenAPI 3.1 document", _openapi, schema=_ref("OpenAPI")),
    Endpoint(
        "/api/report", "the newest campaign's report", _report,
        schema=_ref("Report"), missing=_NO_CAMPAIGN,
    ),
    Endpoint(
        REPORT_JSON, "the report of the campaign recorded as record {seq}", _report, (SEQ,),
        schema=_ref("Report"), missing="no such record, or it is not a campaign's",
    ),
    *(
        Endpoint(
            x.path, f"{x.title.lower()}, newest first", _listing_json(x), _paging(x.default_limit),
            schema={"type": "array", "items": _ref(x.schema)}, missing=_NO_STORE,
        )
        for x in LISTINGS
    ),
    Endpoint(
        "/api/audit/verify", "the audit chain's verdict: every break, each naming its record",
        _verify, schema=_ref("AuditVerification"), missing=_NO_STORE,
    ),
    Endpoint(
        EVIDENCE_JSON, "one record of the evidence store, any kind", _evidence, (SEQ,),
        schema=_ref("Record"), missing=_NO_RECORD,
    ),
    Endpoint("/", "the newest campaign's report", _report_page, missing=_NO_CAMPAIGN),
    Endpoint(
        REPORT_PAGE, "the report of the campaign recorded as record {seq}", _report_page, (SEQ,),
        missing="no such record, or it is not a campaign's",
    ),
    *(
        Endpoint(
            x.page, f"{x.title.lower()}, newest first", _listing_page(x),
            _paging(x.default_limit), missing=_NO_STORE,
        )
        for x in LISTINGS
    ),
    Endpoint(
        EVIDENCE_PAGE, "one record: its fields, payload and place in the hash chain",
        _evidence_page, (SEQ,), missing=_NO_RECORD,
        description="Reports link each verdict to the records it was judged on at this URL.",
    ),
)  # fmt: skip


# --- the application ---------------------------------------------------------------------


@contextmanager
def _opened(cfg: Config) -> Iterator[Store]:
    store = Store(cfg.evidence_path)
    try:
        yield store
    finally:
        store.close()


def create_app(cfg: Config) -> Starlette:
    """The ASGI app for one workspace."""

    def serve(endpoint: Endpoint) -> Callable[[Request], Response]:
        # a plain function: Starlette runs it in its thread pool, the SQLite reads off the loop
        def respond(request: Request) -> Response:
            with _opened(cfg) as store:
                if not endpoint.html:
                    return JSONResponse(endpoint.handler(store, endpoint.arguments(request)))
                try:
                    body = endpoint.handler(store, endpoint.arguments(request))
                    status = 200
                except OneroofError as exc:
                    status = exc.http_status
                    body = _problem_page(store, status, str(exc).splitlines()[0])
                except Exception as exc:
                    status = 500
                    body = _problem_page(store, status, f"internal error: {type(exc).__name__}")
                return HTMLResponse(body, status, headers={"Content-Security-Policy": PAGE_POLICY})

        return respond

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error(404, f"no such resource: {request.url.path} (GET /api lists them)")
        if exc.status_code == 405:
            return error(
                405,
                f"{request.method} is not allowed on {request.url.path}: this API is read-only "
                "(GET and HEAD only)",
                headers={"Allow": ", ".join(READ_METHODS)},
            )
        return error(exc.status_code, str(exc.detail))

    async def oneroof_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OneroofError)
        return error(exc.http_status, str(exc).splitlines()[0])

    async def unexpected(request: Request, exc: Exception) -> Response:
        return error(500, f"internal error: {type(exc).__name__}")

    routes = [Route(e.path, serve(e), methods=["GET"]) for e in ENDPOINTS]
    return Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: http_error,
            OneroofError: oneroof_error,
            Exception: unexpected,
        },
    )


_PROBLEMS = {400: "Bad request", 404: "Not found", 500: "The evidence store cannot be read"}


def _problem_page(store: Store, status: int, message: str) -> str:
    title = f"{_PROBLEMS.get(status, 'Error')} ({status})"
    return page("problem.html.j2", store.as_of(), "", title=title, status=status, message=message)


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port` (0: a free port), or BadInput saying what to do.

    `serve` binds before it says "serving" and hands this very socket to uvicorn, so a port
    in use or out of range is one line and exit 2, and `--port 0` prints the port it got.
    """
    if not 0 <= port <= 65535:
        raise BadInput(
            f"--port {port} is not a TCP port: choose one from 1 to 65535 (0 picks a free one)"
        )
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise BadInput(
            f"--host {host!r} is not an address to listen on ({why}): use 127.0.0.1, ::1 or 0.0.0.0"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        # as uvicorn does: a restart is not refused while old connections linger in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        where = f"port {port} on {host}"
        if exc.errno == errno.EADDRINUSE:
            raise BadInput(
                f"{where} is already in use: stop what listens there, or choose another "
                "with --port (0 picks a free one)"
            ) from None
        if exc.errno == errno.EACCES:
            raise BadInput(
                f"not allowed to listen on {where} (ports below 1024 need privileges): "
                "choose another with --port"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise BadInput(
                f"--host {host} is not an address of this machine: use 127.0.0.1, ::1 or 0.0.0.0"
            ) from None
        raise BadInput(f"cannot listen on {where}: {exc.strerror}") from None
    return sock


def url(sock: socket.socket) -> str:
    """The address people open for a listening socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
