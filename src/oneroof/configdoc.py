"""The reference of `oneroof.toml`, written from the config model so that it cannot drift.

`reference()` walks the sections of the document model in order and writes, per key, its
type, its default and an example, with the field's own description. `missing()` names the
keys that lack a description, or an example where there is no default: the test suite
fails on them, and `docs/reference/config.md` is `reference()` verbatim.

    python -m oneroof.configdoc > docs/reference/config.md
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from oneroof import config

_HEADER = """\
# `oneroof.toml` reference

Every key of the workspace file, section by section: its type, its default and an example.
This page is generated from the configuration model (`python -m oneroof.configdoc`); a test
fails when a key is missing here or has no description.

A value written `env:NAME` is read from the environment variable NAME when a command needs
it (DSNs, the masking key). Durations are written like `500ms`, `30s`, `2min`, `1h`; ages
like `90min`, `24h`, `7d`. An unknown section or key is an error naming its line, with the
likely key it meant.
"""


def _model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in arguments)
    if origin in (typing.Union, types.UnionType):
        shown = [_type(a) for a in arguments if a is not type(None)]
        return " or ".join(shown) + (" (optional)" if type(None) in arguments else "")
    if origin is list:
        return f"list of {_type(arguments[0])}"
    if origin is dict:
        return f"table of {_type(arguments[0])} → {_type(arguments[1])}"
    names = {str: "string", int: "integer", bool: "boolean", float: "number"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def toml_value(value: Any) -> str:
    """A value as TOML writes it (inline tables and arrays on one line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:_}" if isinstance(value, int) and abs(value) >= 10_000 else str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value, default=str)


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None if info.default is PydanticUndefined else info.default


def _sections() -> Iterator[tuple[str, str, type[BaseModel] | None, FieldInfo]]:
    """(header, name, model, field) for each section of the document, nested ones after."""

    def walk(prefix: str, model: type[BaseModel]) -> Iterator[Any]:
        for name, info in model.model_fields.items():
            inner = _model(info.annotation)
            if inner is None:
                continue
            path = f"{prefix}.{name}" if prefix else name
            array = typing.get_origin(info.annotation) is list
            yield (f"[[{path}]]" if array else f"[{path}]"), name, inner, info
            yield from walk(path, inner)

    for name, info in config._Document.model_fields.items():
        inner = _model(info.annotation)
        if inner is None:
            yield f"[{name}]", name, None, info
            continue
        array = typing.get_origin(info.annotation) is list
        yield (f"[[{name}]]" if array else f"[{name}]"), name, inner, info
        yield from walk(name, inner)


def _example(key: str, info: FieldInfo) -> str:
    if info.examples:
        return f"{key} = {toml_value(info.examples[0])}"
    default = _default(info)
    return f"{key} = {toml_value(default)}" if default is not None else ""


def reference() -> str:
    """The markdown reference of every section and key."""
    lines = [_HEADER]
    for header, _name, model, info in _sections():
        lines.append(f"## `{header}`\n")
        if model is None:
            lines.append(f"{info.description or ''}\n")
            if info.examples:
                example = info.examples[0]
                body = "\n".join(f"{k} = {toml_value(v)}" for k, v in example.items())
                lines.append(f"```toml\n{header}\n{body}\n```\n")
            continue
        doc = (model.__doc__ or "").strip().split("\n\n", 1)
        first = doc[0].split("`:", 1)[-1].strip() if doc else ""
        if first:
            lines.append(first[0].upper() + first[1:] + "\n")
        if len(doc) > 1:
            lines.append(" ".join(doc[1].split()) + "\n")
        keys = [(k, f) for k, f in model.model_fields.items() if _model(f.annotation) is None]
        if not keys:
            continue
        lines.append("| key | type | default | example | what it does |")
        lines.append("| --- | --- | --- | --- | --- |")
        for key, field in keys:
            required = field.is_required()
            default = "required" if required else toml_value(_default(field))
            if not required and _default(field) is None:
                default = "unset"
            default = default.replace("|", "\\|")
            description = (field.description or "").replace("|", "\\|")
            example = _example(key, field).replace("|", "\\|")
            lines.append(
                f"| `{key}` | {_type(field.annotation)} | `{default}` | "
                f"{f'`{example}`' if example else ''} | {description} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def missing() -> list[str]:
    """Keys without a description, or without an example where they have no default."""
    found = []
    for header, _name, model, info in _sections():
        if model is None:
            if not info.description:
                found.append(f"{header}: no description")
            continue
        for key, field in model.model_fields.items():
            if _model(field.annotation) is not None:
                continue
            if not field.description:
                found.append(f"{header} {key}: no description")
            if _default(field) is None and not field.examples and not field.is_required():
                found.append(f"{header} {key}: no default and no example")
            if field.is_required() and not field.examples:
                found.append(f"{header} {key}: required and no example")
    return found


if __name__ == "__main__":
    import sys

    sys.stdout.write(reference())
