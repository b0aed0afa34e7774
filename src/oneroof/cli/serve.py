"""`oneroof serve`: the read-only HTTP API and dashboard over the evidence store."""

from __future__ import annotations

from typing import Annotated

import typer

from oneroof.cli._app import Result, app, err, load_config


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on (0: any free port, printed)")
    ] = 8765,
) -> Result | None:
    """Serve every report, the audit log and all evidence: a read-only JSON API + dashboard."""
    import uvicorn

    from oneroof.api import create_app, listen, url

    cfg = load_config()
    sock = listen(host, port)
    try:
        server = uvicorn.Server(uvicorn.Config(create_app(cfg), log_level="warning"))
        err.print(
            f"oneroof: serving {cfg.workspace} on {url(sock)} (read-only; Ctrl-C stops)",
            markup=False,
        )
        server.run(sockets=[sock])
    finally:
        sock.close()
    return None
