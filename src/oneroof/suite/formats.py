"""A run's result as JUnit XML and as TAP, for CI systems and `pg_prove` readers."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from oneroof.suite.parsing import FAILING, SKIPPED, Status
from oneroof.suite.results import ItemResult, RunResult


def to_junit(result: RunResult) -> str:
    """JUnit XML: one testsuite per file, one testcase per check, step or assertion."""
    root = ET.Element(
        "testsuites",
        name=f"oneroof check ({result.target})",
        tests=str(len(result.items)),
        failures=str(sum(1 for i in result.items if i.status == Status.FAILED)),
        errors=str(sum(1 for i in result.items if i.status in FAILING - {Status.FAILED})),
        skipped=str(sum(1 for i in result.items if i.status in SKIPPED)),
        time=_seconds(result.ms),
    )
    for file in result.files:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=file.path,
            tests=str(len(file.items)),
            failures=str(sum(1 for i in file.items if i.status == Status.FAILED)),
            errors=str(sum(1 for i in file.items if i.status in FAILING - {Status.FAILED})),
            skipped=str(sum(1 for i in file.items if i.status in SKIPPED)),
            time=_seconds(file.ms),
        )
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="sha256", value=file.sha256)
        ET.SubElement(properties, "property", name="target", value=result.target)
        classname = file.scenario or Path(file.path).stem
        for item in file.items:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=classname,
                name=item.title,
                file=file.path,
                line=str(item.line),
                time=_seconds(item.ms),
            )
            if item.status == Status.FAILED:
                ET.SubElement(case, "failure", type=str(item.status), message=item.detail())
            elif item.status in FAILING:
                ET.SubElement(case, "error", type=str(item.status), message=item.detail())
            elif item.status in SKIPPED:
                reason = item.detail()
                ET.SubElement(case, "skipped", type=str(item.status), message=str(item.status))
                if reason:
                    case[-1].text = reason
    if result.residue is not None and not result.residue.free:
        residue = ET.SubElement(root, "testsuite", name="residue proof", tests="1", failures="1")
        case = ET.SubElement(residue, "testcase", classname="residue", name="residue-free")
        ET.SubElement(case, "failure", type="residue", message=result.residue.describe())
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _seconds(milliseconds: float) -> str:
    return f"{milliseconds / 1000:.6f}"


def to_tap(result: RunResult) -> str:
    """TAP version 13 as `pg_prove` writes it: a plan, one line per item, YAML diagnostics."""
    items = result.items
    extra = 1 if result.residue is not None else 0
    lines = ["TAP version 13", f"1..{len(items) + extra}"]
    for number, item in enumerate(items, start=1):
        description = _tap_escape(f"{item.file}: {item.title}")
        if item.status == Status.PASSED:
            lines.append(f"ok {number} - {description}")
        elif item.status in SKIPPED:
            reason = _tap_escape(str(item.status) + (f": {item.detail()}" if item.detail() else ""))
            lines.append(f"ok {number} - {description} # SKIP {reason}")
        else:
            lines.append(f"not ok {number} - {description}")
            lines.extend(_tap_yaml(item))
    if result.residue is not None:
        number = len(items) + 1
        verdict = _tap_escape(result.residue.describe())
        lines.append(f"{'ok' if result.residue.free else 'not ok'} {number} - {verdict}")
    lines.append(f"# {result.summary()}")
    return "\n".join(lines) + "\n"


def _tap_escape(text: str) -> str:
    return " ".join(text.split()).replace("\\", "\\\\").replace("#", "\\#")


def _tap_yaml(item: ItemResult) -> Iterator[str]:
    yield "  ---"
    fields = {
        "status": str(item.status),
        "message": item.detail(),
        "expected": item.expected,
        "got": item.got,
        "sqlstate": item.sqlstate,
        "file": item.file,
        "line": item.line,
        "ms": round(item.ms, 3),
    }
    for key, value in fields.items():
        if value is not None and value != "":
            yield f"  {key}: {json.dumps(value, ensure_ascii=False)}"
    yield "  ..."
