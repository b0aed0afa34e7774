"""The read-only HTTP API and its dashboard page, over the workspace's evidence store.

It serves what the campaigns measured — the latest report, the audit log and its chain
verdict, saved fingerprints, check runs, rehearsals — and never opens a database
connection: the evidence store is its only source, opened read-only. Only GET and HEAD
exist; anything else gets 405, an unknown path 404, every error the one JSON shape
`{"error": {"status": N, "message": "..."}}` — `OneroofError`s mapped once, by their status.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from oneroof import report
from oneroof.config import Config
from oneroof.errors import BadInput, NotFound, OneroofError
from oneroof.evidence import Evidence

MAX_LIMIT = 1000


def error(status: int, message: str) -> JSONResponse:
    """The one error shape of the API."""
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


def _limit(request: Request, default: int = 100) -> int:
    raw = request.query_params.get("limit", str(default))
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"limit must be an integer, not {raw!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadInput(f"limit must be between 1 and {MAX_LIMIT}")
    return value


def create_app(cfg: Config) -> Starlette:
    """The ASGI app for one workspace."""

    def evidence() -> Evidence:
        # read-only: a GET never creates the store nor writes to it
        return Evidence(cfg.evidence_path, read_only=True)

    def latest() -> report.Report:
        record = evidence().latest("campaign")
        if record is None:
            raise NotFound("no campaign has run in this workspace yet")
        return report.Report.from_dict(record.payload["report"])

    async def dashboard(request: Request) -> Response:
        try:
            found = latest()
        except NotFound:
            return HTMLResponse(
                "<!doctype html><title>oneroof</title><p>No campaign has run yet: "
                "<code>oneroof run</code>.</p>",
                status_code=404,
            )
        return HTMLResponse(report.to_html(found))

    async def report_json(request: Request) -> Response:
        return JSONResponse(latest().to_dict())

    async def reports(request: Request) -> Response:
        limit = _limit(request, 20)
        rows = evidence().records("campaign")[-limit:]
        return JSONResponse(
            [
                {
                    "seq": r.seq,
                    "at": r.at,
                    "final_status": r.payload["report"]["final_status"],
                    "headline": r.payload["report"]["headline"],
                }
                for r in reversed(rows)
            ]
        )

    async def audit(request: Request) -> Response:
        limit = _limit(request)
        rows = evidence().records("audit")[-limit:]
        return JSONResponse([r.as_dict() for r in rows])

    async def audit_verify(request: Request) -> Response:
        store = evidence()
        problems = store.verify()
        return JSONResponse(
            {"intact": not problems, "records": store.last_seq(), "problems": problems}
        )

    def listing(kind: str, fields: tuple[str, ...]) -> Any:
        async def endpoint(request: Request) -> Response:
            limit = _limit(request, 20)
            rows = evidence().records(kind)[-limit:]
            return JSONResponse(
                [
                    {"seq": r.seq, "at": r.at, **{f: r.payload.get(f) for f in fields}}
                    for r in reversed(rows)
                ]
            )

        return endpoint

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404 and exc.detail == "Not Found":  # no route matched
            return error(404, f"no such resource: {request.url.path}")
        if exc.status_code == 405 and exc.detail == "Method Not Allowed":
            return error(405, f"{request.method} is not allowed: this API is read-only")
        return error(exc.status_code, str(exc.detail))

    async def oneroof_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OneroofError)
        return error(exc.http_status, str(exc).splitlines()[0])

    async def unexpected(request: Request, exc: Exception) -> Response:
        return error(500, f"internal error: {type(exc).__name__}")

    routes = [
        Route("/", dashboard, methods=["GET"]),
        Route("/api/report", report_json, methods=["GET"]),
        Route("/api/reports", reports, methods=["GET"]),
        Route("/api/audit", audit, methods=["GET"]),
        Route("/api/audit/verify", audit_verify, methods=["GET"]),
        Route(
            "/api/fingerprints",
            listing("fingerprint", ("id", "short", "mode", "label", "wal", "database")),
            methods=["GET"],
        ),
        Route(
            "/api/check-runs",
            listing("check-run", ("objective", "target", "verdict", "totals", "residue")),
            methods=["GET"],
        ),
        Route("/api/rehearsals", listing("rehearsal", ("plan", "ok")), methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: http_error,
            OneroofError: oneroof_error,
            Exception: unexpected,
        },
    )
