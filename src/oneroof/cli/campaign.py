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


report_app = typer.Typer(help="The newest campaign's report; verify a report against its evidence.")
app.add_typer(report_app, name="report")


@report_app.callback(invoke_without_command=True)
def report_command(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", "-f", help="md | json | html | pdf")] = "md",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
) -> Result | None:
    """Print the report of the newest campaign (md, json, html; pdf with -o, via Chromium)."""
    if ctx.invoked_subcommand is not None:
        return None
    from oneroof import campaign, report
    from oneroof.errors import BadInput

    cfg = load_config()
    evidence = open_evidence(cfg)
    latest = campaign.latest_report(evidence)
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        where = "is a directory" if output.is_dir() else f"has no folder {output.parent}"
        raise BadInput(f"--output {output} {where}: name a file in an existing folder")
    if fmt == "pdf":
        if output is None:
            raise BadInput("a PDF is a file: name it with -o, e.g. -o report.pdf")
        report.write_pdf(latest, output)
        err.print(f"written {output}")
        return Outcome(latest.final_status == report.PASS)
    text = report.render(latest, fmt)
    if output is not None:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"--output {output}: cannot write it: {exc.strerror or exc}") from None
        err.print(f"written {output}")
    else:
        sys.stdout.write(text)
    return Outcome(latest.final_status == report.PASS)


@report_app.command("verify")
def report_verify(
    path: Annotated[
        Path | None,
        typer.Argument(
            metavar="[REPORT]",
            help="A report file (md, json, html) or report directory (default: the newest)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> Result | None:
    """Recompute a report from its evidence records; check its digest and the hash chain.

    Exit 1 naming each difference: an edited report file, an edited evidence record.
    """
    from oneroof import provenance
    from oneroof.errors import BadInput

    cfg = load_config()
    evidence = open_evidence(cfg)
    if path is not None and not path.exists():
        raise BadInput("no such report file or directory", file=path)
    check = provenance.verify(evidence, path, reports=cfg.state_dir / "reports")
    if as_json:
        print_json(check.to_dict())
        return check
    for problem in check.problems:
        out.print(f"DIFFERS  {problem}", markup=False)
    for item in check.checked:
        err.print(f"checked: {item}", markup=False)
    files = ", ".join(check.files) or "none"
    verdict = "verified" if check.ok else f"{len(check.problems)} difference(s)"
    out.print(
        f"report {check.report_id or '?'} (campaign record #{check.campaign}; files: {files}): "
        f"{verdict}",
        markup=False,
    )
    return check


demo_app = typer.Typer(help="The whole campaign on two embedded servers and the One-Roof workload.")
app.add_typer(demo_app, name="demo")


@demo_app.callback(invoke_without_command=True)
def demo_command(
    ctx: typer.Context,
    objects: Annotated[int, typer.Option("--objects", help="Objects in production")] = 1000,
    gap: Annotated[int, typer.Option("--gap", help="Objects without an active owner")] = 210,
    seed: Annotated[int, typer.Option("--seed", help="Generator seed")] = 1,
    ratify: Annotated[
        bool, typer.Option("--ratify", help="Play the humans, let the gate open, re-run")
    ] = False,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Directory for servers, workspace, reports")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the servers running (`oneroof demo stop`)")
    ] = False,
    live: Annotated[
        bool,
        typer.Option("--live", help="An application keeps writing to production meanwhile"),
    ] = False,
) -> Result | None:
    """The whole campaign on two embedded servers and the One-Roof reference workload."""
    if ctx.invoked_subcommand is not None:
        return None
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
    if keep:
        import shlex

        environment = " ".join(
            f"{k}={shlex.quote(v)}" for k, v in demo.dsns(result.directory).items()
        )
        out.print(
            "\nthe servers keep running; to explore (production reader, applier, non-production):\n"
            f"  cd {shlex.quote(str(result.workspace))}\n"
            f"  export {environment}\n"
            f"  oneroof gates\n"
            f"stop them: oneroof demo stop --dir {shlex.quote(str(result.directory))}",
            markup=False,
        )
    return result


@demo_app.command("stop")
def demo_stop(
    directory: Annotated[
        Path, typer.Option("--dir", help="The directory of a demo run with --keep")
    ],
) -> Result | None:
    """Stop and remove the servers of a demo run with --keep."""
    from oneroof import demo

    stopped = demo.stop(directory.resolve())
    err.print(
        f"stopped {stopped} server(s) of {directory}"
        if stopped
        else f"no demo server runs in {directory}"
    )
    return None
