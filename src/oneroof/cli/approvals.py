"""`oneroof approve PLAN`, `oneroof approvals verify PLAN` and `oneroof rollout digest PLAN`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from oneroof.cli._app import Result, app, open_workspace, out, print_json
from oneroof.cli.rollout import JsonOption, PlanArgument, _plan, rollout_app

if TYPE_CHECKING:
    from oneroof.approvals import Signature, Verification

approvals_app = typer.Typer(
    help="Signatures over the exact plan: each one judged against its digest and the quorum."
)
app.add_typer(approvals_app, name="approvals")

_STYLES = {
    "valid": "green",
    "other digest": "yellow",
    "unknown key": "red",
    "wrong level": "red",
    "bad signature": "red",
}


def _show_signatures(signatures: list[Signature]) -> None:
    """One block per approval file: status, who and when, the file, then why."""
    for signature in signatures:
        style = _STYLES.get(signature.status, "white")
        out.print(
            f"  [{style}]{escape(signature.status):<13}[/{style}] {escape(signature.signer)} "
            f"({escape(signature.level)}) at {escape(signature.signed_at)}  "
            f"[dim]{escape(signature.file)}[/dim]"
        )
        out.print(f"                {escape(signature.detail)}")
        if signature.comment:
            out.print(f"                [dim]comment: {escape(signature.comment)}[/dim]")


def _show_quorum(verification: Verification) -> None:
    style = "green" if verification.met else "red"
    state = "met" if verification.met else "NOT met"
    need = "required for apply" if verification.required else "not required for apply"
    out.print(f"[{style}]quorum {state}[/{style}] ({need}): {escape(verification.summary())}")


# -- rollout digest ---------------------------------------------------------------------------


@rollout_app.command("digest")
def digest_command(
    plan_dir: PlanArgument,
    statement_only: Annotated[
        bool,
        typer.Option(
            "--statement", help="Print only the exact statement (to sign with ssh-keygen -Y sign)"
        ),
    ] = False,
    as_json: JsonOption = False,
) -> Result | None:
    """The plan's canonical statement (artifacts, rehearsal, source) and its SHA-256 digest."""
    from oneroof import approvals

    ws = open_workspace()
    plan = _plan(ws.cfg, plan_dir)
    target = approvals.require_current(ws.evidence, plan)
    if statement_only:
        # the exact bytes that are signed: not through rich, which would wrap and style them
        sys.stdout.write(target.text)
        sys.stdout.flush()
        return None
    if as_json:
        print_json(target.to_dict())
        return None
    sys.stdout.write(target.text)
    sys.stdout.flush()
    out.print(f"digest (sha256 of the statement): {target.digest}")
    return None


# -- approve ----------------------------------------------------------------------------------


@app.command("approve")
def approve_command(
    plan_dir: PlanArgument,
    key: Annotated[
        Path | None,
        typer.Option("--key", help="Your Ed25519 private key (OpenSSH or PEM) to sign with"),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--as", help="Which approver of oneroof.toml you are (default: the one with your key)"
        ),
    ] = None,
    ssh_signature: Annotated[
        Path | None,
        typer.Option(
            "--ssh-signature",
            help="Record a signature made with `ssh-keygen -Y sign -n oneroof` over the "
            "output of `oneroof rollout digest PLAN --statement` (needs --as)",
        ),
    ] = None,
    comment: Annotated[
        str, typer.Option("--comment", help="A note kept in the approval file (not signed)")
    ] = "",
    as_json: JsonOption = False,
) -> Result | None:
    """Sign the plan's current digest and write PLAN/approvals/<name>-<digest8>.json."""
    from oneroof import approvals

    ws = open_workspace()
    plan = _plan(ws.cfg, plan_dir)
    result = approvals.approve(
        ws.cfg,
        ws.evidence,
        plan,
        key=key,
        name=name,
        ssh_signature=ssh_signature,
        comment=comment,
    )
    if as_json:
        print_json(result.to_dict())
        return result
    signature = result.signature
    style = _STYLES.get(signature.status, "white")
    out.print(
        f"{escape(signature.signer)} ({escape(signature.level)}) signed digest "
        f"{escape(signature.digest[:12])}… of {escape(plan.name)}: {escape(str(result.file))}"
    )
    out.print(f"  [{style}]{escape(signature.status)}[/{style}]: {escape(signature.detail)}")
    _show_quorum(result.verification)
    return result


# -- approvals verify -------------------------------------------------------------------------


@approvals_app.command("verify")
def verify_command(plan_dir: PlanArgument, as_json: JsonOption = False) -> Result | None:
    """Judge every approval of the plan against its current digest; exit 1 unless the quorum
    is met."""
    from oneroof import approvals

    ws = open_workspace()
    plan = _plan(ws.cfg, plan_dir)
    verification = approvals.evaluate(ws.cfg, ws.evidence, plan)
    if as_json:
        print_json(verification.to_dict())
        return verification
    target = verification.statement
    if target is not None:
        out.print(
            f"plan {escape(plan.name)}: digest {target.digest} "
            f"(rehearsal evidence #{target.rehearsal})"
        )
    else:
        out.print(f"plan {escape(plan.name)}: {escape(verification.summary())}")
    if verification.signatures:
        _show_signatures(verification.signatures)
    else:
        out.print(f"no approval in {escape(str(approvals.directory(plan)))}")
    _show_quorum(verification)
    return verification
