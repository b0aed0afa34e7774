"""Whether a clone still stands for production: the reasons to re-make it, and the data drift.

A live production always differs from any copy of it in rows; that alone never re-makes a
clone (it is reported). What does: production's schema changed since the clone's source
was read, a gated apply changed production since then, or the source is older than
`[clone] max_age`. Pure functions over fingerprints and ledger rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from oneroof import fingerprint
from oneroof.fingerprint import Fingerprint


@dataclass
class CloneRefresh:
    """What `run` found about its clone's freshness, and what it did about it."""

    policy: str  # auto | never
    reasons: list[str] = field(default_factory=list)
    remade: bool = False

    @property
    def stale(self) -> bool:
        return bool(self.reasons)

    def note(self) -> str | None:
        """The report's sentence, when there is something to say."""
        if not self.reasons:
            return None
        why = "; ".join(self.reasons)
        if self.remade:
            return f"The clone was re-made from production for this run: {why}."
        return (
            f"The clone is out of date ({why}) and was kept, since [clone] refresh = "
            f"{self.policy!r}: rehearsals ran against the older state. `oneroof clone drop` "
            "and run again to rehearse against production as it is now."
        )

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "reasons": self.reasons, "remade": self.remade}


def age_text(seconds: float) -> str:
    """An age as people say it: 45s, 12min, 5h, 3d."""
    if seconds < 120:
        return f"{int(seconds)}s"
    if seconds < 7200:
        return f"{int(seconds // 60)}min"
    if seconds < 172800:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def source_age(source: Fingerprint, now: datetime) -> float | None:
    """Seconds since the source fingerprint was read; None when it carries no time."""
    try:
        taken = datetime.fromisoformat(source.taken_at)
    except ValueError:
        return None
    return max(0.0, (now - taken).total_seconds())


def refresh_reasons(
    source: Fingerprint | None,
    schema_now: Fingerprint,
    applied_since: Iterable[str],
    age_seconds: float | None,
    max_age_seconds: float | None,
) -> list[str]:
    """Why the clone no longer stands for production (empty: it does)."""
    if source is None:
        return ["its source fingerprint is not in this workspace's evidence store"]
    reasons = []
    changed = fingerprint.diff(source, schema_now, sections=["schema"])
    if changed:
        keys = sorted({d.key for d in changed})
        shown = ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        reasons.append(f"production's schema changed since its source ({shown})")
    applied = sorted(applied_since)
    if applied:
        shown = ", ".join(applied[:4]) + (
            f" (+{len(applied) - 4} more)" if len(applied) > 4 else ""
        )
        reasons.append(f"{len(applied)} gated apply(s) changed production since ({shown})")
    if max_age_seconds is not None and age_seconds is not None and age_seconds > max_age_seconds:
        reasons.append(
            f"its source is {age_text(age_seconds)} old, older than [clone] max_age "
            f"({age_text(max_age_seconds)})"
        )
    return reasons


def data_drift(source: Fingerprint, now: Fingerprint, age_seconds: float | None) -> str | None:
    """The rows applications changed since the clone's source, as one sentence (or None)."""
    differences = fingerprint.diff(source, now, sections=["counts", "content"])
    tables = sorted({d.key for d in differences})
    if not tables:
        return None
    before = source.sections.get("counts", {})
    after = now.sections.get("counts", {})
    shown = []
    for table in tables[:5]:
        was, is_ = before.get(table), after.get(table)
        rows = f"{was} → {is_} rows" if was != is_ else "rows changed"
        shown.append(f"{table} ({rows})")
    more = f" (+{len(tables) - 5} more)" if len(tables) > 5 else ""
    age = f", {age_text(age_seconds)} ago" if age_seconds is not None else ""
    return (
        f"Since the clone's source ({source.short}{age}), applications changed {len(tables)} "
        f"table(s) on production: {', '.join(shown)}{more}. On a live production this is "
        "expected; rehearsals ran on the source's rows, and each artifact's gates, exact "
        "deltas and stops decide on production's."
    )
