"""`oneroof serve`: the read-only HTTP API and dashboard over the evidence store."""

from __future__ import annotations

from typing import Annotated

import typer

from oneroof.cli._app import Result, app, err, load_config


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on")] = 8765,
) -> Result | None:
    """Serve the latest report, audit log and evidence as a read-only JSON API + dashboard."""
    import uvicorn

    from oneroof.api import create_app

    cfg = load_config()
    err.print(f"oneroof: serving {cfg.workspace} on http://{host}:{port}/ (read-only)")
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning")
    return None
