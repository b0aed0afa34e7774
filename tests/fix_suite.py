"""Fixture plugin: reading statuses back out of the JUnit and TAP outputs."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def junit_statuses(xml: str) -> list[str]:
    """The status of every testcase of a JUnit document, in order."""
    statuses = []
    for case in ET.fromstring(xml).iter("testcase"):
        if case.get("classname") == "residue":
            continue
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            statuses.append(failure.get("type", ""))
        elif error is not None:
            statuses.append(error.get("type", ""))
        elif skipped is not None:
            statuses.append(skipped.get("message", ""))
        else:
            statuses.append("passed")
    return statuses


def tap_statuses(tap: str) -> list[str]:
    """The status of every test line of a TAP stream, in order (the residue line left out)."""
    statuses: list[str] = []
    lines = tap.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("ok ") or line.startswith("not ok "):
            if " - residue" in line:
                continue
            if line.startswith("ok "):
                skip = line.split(" # SKIP ", 1)
                statuses.append(skip[1].split(":")[0] if len(skip) == 2 else "passed")
            else:
                status = lines[index + 2].split(":", 1)[1].strip().strip('"')
                statuses.append(status)
    return statuses
