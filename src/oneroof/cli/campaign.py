"""`oneroof run`, `oneroof report` and `oneroof demo`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass
from oneroof.cli._app import (
    Outcome,
    Result,
    app,
    err,
    load_config,
    open_evidence,
    open_workspace,
    out,
    print_json,
)


def _step(message: str) -> None:
    err.print(f"[dim]›[/dim] {message}", markup=True, highlight=False)


@contextmanager
def _progress() -> Iterator[Callable[[str], None]]:
    """A live status line on a terminal (each step also logged); plain lines otherwise."""
    if not sys.stderr.isatty():
        yield _step
        return
    with err.status("starting", spinner="dots") as status:

        def step(message: str) -> None:
            status.update(message)
            _step(message)

        yield step


@app.command("run")
def run_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (progress on stderr)")
    ] = False,
) -> Result | None:
    """Run the campaign: fingerprints, clone, suites, rehearsals, gates → report (exit 1: FAIL)."""
    from oneroof import campaign, report

    ws = open_workspace()
    with _progress() as step:
        result = campaign.run(ws, step=step)
    if as_json:
        print_json(
            {**result.report.to_dict(), "files": {k: str(v) for k, v in result.files.items()}}
        )
    else:
        out.print(report.summary(result.report), markup=False)
    err.print(f"report: {result.files['md']} (also .json, .html)")
    return result


@app.command("report")
def report_command(
    fmt: Annotated[str, typer.Option("--format", "-f", help="md | json | html")] = "md",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
) -> Result | None:
    """Print the report of the newest campaign (md, json or html)."""
    from oneroof import campaign, report

    cfg = load_config()
    evidence = open_evidence(cfg)
    latest = campaign.latest_report(evidence)
    text = report.render(latest, fmt)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        err.print(f"written {output}")
    else:
        sys.stdout.write(text)
    return Outcome(latest.final_status == report.PASS)


@app.command("demo")
def demo_command(
    objects: Annotated[int, typer.Option("--objects", help="Objects in production")] = 1000,
    gap: Annotated[int, typer.Option("--gap", help="Objects without an active owner")] = 210,
    seed: Annotated[int, typer.Option("--seed", help="Generator seed")] = 1,
    ratify: Annotated[
        bool, typer.Option("--ratify", help="Play the humans, let the gate open, re-run")
    ] = False,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Directory for servers, workspace, reports")
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the servers running")] = False,
    live: Annotated[
        bool,
        typer.Option("--live", help="An application keeps writing to production meanwhile"),
    ] = False,
) -> Result | None:
    """The whole campaign on two embedded servers and the One-Roof reference workload."""
    from oneroof import demo, report

    with _progress() as step:
        result = demo.run(
            directory=directory,
            objects=objects,
            gap=gap,
            seed=seed,
            ratify=ratify,
            keep=keep,
            live=live,
            step=step,
        )
    for index, campaign_result in enumerate(result.reports, start=1):
        title = "after ratification and rollout" if index > 1 else "campaign"
        out.print(f"\n== {title} ==", markup=False)
        out.print(report.summary(campaign_result.report), markup=False)
        out.print(f"report: {campaign_result.files['html']}", markup=False)
    if result.application is not None:
        seen = result.application.to_dict()
        out.print(
            f"\nthe application meanwhile: {seen['committed']} transactions committed, "
            f"{seen['failed']} failed; p50 {seen['p50_ms']} ms, p99 {seen['p99_ms']} ms",
            markup=False,
        )
    out.print(f"\ndemo finished in {result.seconds:.1f} s; workspace: {result.workspace}")
    return result
