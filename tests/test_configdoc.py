"""The oneroof.toml reference is the config model's own, and complete (no database)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from oneroof import configdoc

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "config.md"


def test_every_key_has_a_description_and_an_example_or_a_default() -> None:
    assert configdoc.missing() == []


def test_the_committed_reference_is_the_generated_one() -> None:
    assert REFERENCE.read_text() == configdoc.reference(), (
        "docs/reference/config.md is out of date: "
        "`.venv/bin/python -m oneroof.configdoc > docs/reference/config.md`"
    )


def test_every_example_of_the_reference_is_valid_toml() -> None:
    for line in REFERENCE.read_text().splitlines():
        if line.startswith("| `") and line.count("|") >= 6:
            example = line.split(" | ")[3].strip().strip("`").replace("\\|", "|")
            if example:
                tomllib.loads(example)
