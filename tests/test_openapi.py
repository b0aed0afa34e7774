"""The API against its own OpenAPI document, property-based, over a real campaign's store.

Requests are generated from the document the server itself serves at /api/openapi.json:
its paths, their path and query parameters with values inside and outside their schemas,
unknown parameters, repeated ones, unknown paths and every method. Whether a value is inside
its schema is decided by jsonschema against the document, not by the server's code; every
answer must then have a status the document gives, a body its schema accepts (every error
the one error shape), and lists must hold exactly the store's records, newest first. All in
process (Starlette's test client): no network.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from oneroof import api, config
from oneroof.evidence import Evidence, Record

DOCUMENT_URI = "urn:oneroof:openapi"
READ = ("GET", "HEAD")
WRITE = ("POST", "PUT", "DELETE", "PATCH", "OPTIONS")
_INTEGER_TEXT = re.compile(r"-?[0-9]+")  # how an integer is written in a query string


@pytest.fixture(scope="module")
def app(campaign_workspace: Path) -> Starlette:
    return api.create_app(config.load(campaign_workspace))


@pytest.fixture(scope="module")
def http(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def document(http: TestClient) -> dict[str, Any]:
    response = http.get("/api/openapi.json")
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


@pytest.fixture(scope="module")
def schemas(document: dict[str, Any]) -> Registry[Any]:
    """The document as a JSON Schema resource, so that its `$ref`s resolve inside it."""
    resource: Resource[Any] = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)
    return registry


@pytest.fixture(scope="module")
def store(campaign_workspace: Path) -> Iterator[Evidence]:
    evidence = Evidence(config.load(campaign_workspace).evidence_path, read_only=True)
    yield evidence
    evidence.close()


class Target:
    """The API under test as one argument: the client, its document, the store behind it.

    A failing example's report prints its arguments; this one prints as a short name, not
    as the whole OpenAPI document (which, printed, also trips Hypothesis's final replay).
    """

    def __init__(
        self, http: TestClient, document: dict[str, Any], schemas: Registry[Any], store: Evidence
    ) -> None:
        self.http, self.document, self.schemas, self.store = http, document, schemas, store
        self.operations = operations(document)
        self.last_seq = store.last_seq()

    def __repr__(self) -> str:
        return f"Target(records={self.last_seq})"


@pytest.fixture(scope="module")
def target(
    http: TestClient, document: dict[str, Any], schemas: Registry[Any], store: Evidence
) -> Target:
    return Target(http, document, schemas, store)


def pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True)
class Operation:
    """One documented GET, read from the document."""

    path: str
    spec: dict[str, Any]

    @property
    def parameters(self) -> list[dict[str, Any]]:
        return list(self.spec.get("parameters", []))

    def media(self, status: int) -> str:
        response = self.response(status)
        assert response is not None
        (media,) = response["content"]
        return str(media)

    def response(self, status: int) -> dict[str, Any] | None:
        responses = self.spec["responses"]
        found = responses.get(str(status), responses.get("default") if status >= 400 else None)
        return found if found is None else dict(found)

    def schema_ref(self, status: int) -> dict[str, str]:
        """A schema that points into the document at the answer's schema for `status`."""
        key = str(status) if str(status) in self.spec["responses"] else "default"
        where = pointer("paths", self.path, "get", "responses", key, "content", self.media(status))
        return {"$ref": f"{DOCUMENT_URI}#{where}/schema"}

    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(self.path)) + "/?")


def operations(document: dict[str, Any]) -> list[Operation]:
    found = []
    for path, item in document["paths"].items():
        assert set(item) == {"get"}, f"{path}: only GET is served (HEAD with it)"
        found.append(Operation(path, item["get"]))
    return found


def number(raw: str) -> int:
    """The integer a parameter's text within its schema stands for (zeros and all)."""
    sign, digits = ("-", raw[1:]) if raw.startswith("-") else ("", raw)
    return int(sign + (digits.lstrip("0") or "0"))


def within(schema: dict[str, Any], raw: str) -> bool:
    """Whether the text of a parameter is a value its schema accepts (jsonschema decides)."""
    value: Any = raw
    if schema.get("type") == "integer" and _INTEGER_TEXT.fullmatch(raw):
        value = number(raw)
    return bool(Draft202012Validator(schema).is_valid(value))


# --- requests generated from the document -------------------------------------------------

_NOT_INTEGERS = st.sampled_from(
    ["", "+5", " 5", "5 ", "5.0", "1e3", "1_000", "0x10", "٣", "１", "−1", "null", "true"]
)
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/"), max_size=10
)


def integer_text(schema: dict[str, Any], last_seq: int) -> st.SearchStrategy[str]:
    low, high = int(schema.get("minimum", 0)), int(schema.get("maximum", 2**63 - 1))
    return st.one_of(
        st.integers(low - 2, last_seq + 3).map(str),  # the store's records and the bounds
        st.sampled_from([low, low - 1, high, high + 1]).map(str),
        st.integers(-(2**80), 2**80).map(str),
        st.tuples(st.integers(1, 5000), st.integers(0, 99)).map(lambda z: "0" * z[0] + str(z[1])),
        _NOT_INTEGERS,
        _TEXT,
    )


def value_text(schema: dict[str, Any], last_seq: int) -> st.SearchStrategy[str]:
    if "enum" in schema:
        choices = [str(c) for c in schema["enum"]]
        return st.one_of(
            st.sampled_from(choices),
            st.sampled_from([c.upper() for c in choices] + [f"{c} " for c in choices] + [""]),
            _TEXT,
        )
    assert schema.get("type") == "integer", f"a parameter schema this test cannot draw: {schema}"
    return integer_text(schema, last_seq)


@dataclass(frozen=True)
class Call:
    """One generated request and what the document says of it."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    operation: Operation | None  # None: a path the document does not have
    within: bool  # every parameter inside its schema, none unknown or repeated
    arguments: dict[str, str]

    @property
    def url(self) -> str:
        return self.path + ("?" + urlencode(self.query) if self.query else "")


@st.composite
def documented_call(draw: st.DrawFn, operation: Operation, last_seq: int) -> Call:
    method = draw(st.sampled_from(READ * 4 + WRITE))
    path, ok, arguments = operation.path, True, {}
    for parameter in (p for p in operation.parameters if p["in"] == "path"):
        raw = draw(value_text(parameter["schema"], last_seq).filter(lambda t: t.strip(".") != ""))
        ok &= within(parameter["schema"], raw)
        arguments[parameter["name"]] = raw
        path = path.replace("{" + parameter["name"] + "}", quote(raw, safe=""))
    query: list[tuple[str, str]] = []
    known = [p for p in operation.parameters if p["in"] == "query"]
    for parameter in (
        draw(st.lists(st.sampled_from(known), unique_by=lambda p: p["name"])) if known else []
    ):
        raw = draw(value_text(parameter["schema"], last_seq))
        ok &= within(parameter["schema"], raw)
        query.append((parameter["name"], raw))
        arguments[parameter["name"]] = raw
    if query and draw(st.integers(0, 9)) == 0:  # the same parameter twice
        query.append(query[0])
        ok = False
    if draw(st.integers(0, 7)) == 0:  # a parameter the path does not have
        names = {p["name"] for p in known}
        unknown = draw(st.one_of(st.sampled_from(["seq", "kind", "offset"]), _TEXT))
        if unknown and unknown not in names:
            query.append((unknown, draw(_TEXT)))
            ok = False
    return Call(method, path, tuple(query), operation, ok, arguments)


@st.composite
def unknown_call(draw: st.DrawFn, ops: list[Operation]) -> Call:
    segment = st.text(
        alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="-_~"),
        min_size=1,
        max_size=8,
    )
    prefix = draw(st.sampled_from(["", "/api", "/evidence", "/api/evidence", "/reports"]))
    path = prefix + "/" + "/".join(draw(st.lists(segment, min_size=1, max_size=3)))
    while any(op.pattern().fullmatch(path) for op in ops):
        path += "/more"  # a documented template matched: segments more match none
    method = draw(st.sampled_from(READ + WRITE))
    return Call(method, path, (), None, True, {})


# --- the oracle ---------------------------------------------------------------------------


def listing(path: str) -> api.Listing | None:
    return next((x for x in api.LISTINGS if path in (x.path, x.page)), None)


def expected_list(store: Evidence, kind: str, arguments: dict[str, str]) -> list[int]:
    """The seqs a list must hold, from the store itself: bounds, order, limit."""
    before = number(arguments.get("before", str(2**63)))
    after = number(arguments.get("after", "0"))
    seqs = [r.seq for r in store.records(kind) if after < r.seq < before]
    if arguments.get("order", "desc") == "desc":
        seqs.reverse()
    default = next(
        x.default_limit for x in api.LISTINGS if x.kind == kind
    )  # the document's default, checked below
    return seqs[: number(arguments.get("limit", str(default)))]


def expected_read(call: Call, store: Evidence) -> int:
    """The status a GET inside every schema must get: 200, or 404 where data is missing."""
    assert call.operation is not None
    if "seq" in call.arguments:
        record: Record | None = store.record(number(call.arguments["seq"]))
        if record is None:
            return 404
        if "/reports/" in call.operation.path and record.kind != "campaign":
            return 404
    return 200


def check_error(body: Any, status: int) -> None:
    assert body["error"]["status"] == status
    assert "\n" not in body["error"]["message"]


@pytest.mark.parametrize("path", [e.path for e in api.ENDPOINTS])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_documented_path_answers_as_documented(
    path: str, data: st.DataObject, target: Target
) -> None:
    (operation,) = [op for op in target.operations if op.path == path]
    check(target, data.draw(documented_call(operation, target.last_seq), label="call"))


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_an_unknown_path_is_404_in_the_error_shape_whatever_the_method(
    data: st.DataObject, target: Target
) -> None:
    check(target, data.draw(unknown_call(target.operations), label="call"))


def check(target: Target, call: Call) -> None:
    """The answer to `call` is what the document says of it, and what the store holds."""
    store, last_seq = target.store, target.last_seq
    note(f"{call.method} {call.url} within={call.within}")
    response = target.http.request(call.method, call.url)
    status = response.status_code
    body_expected = call.method != "HEAD"
    if call.operation is None:
        assert status == 404
        assert response.headers["content-type"] == "application/json"
        if body_expected:
            check_error(response.json(), 404)
            assert call.path in response.json()["error"]["message"]
        return
    operation = call.operation
    if call.method not in READ:
        assert status == 405 and response.headers["allow"] == "GET, HEAD"
        check_error(response.json(), 405)
        return
    wanted = expected_read(call, store) if call.within else 400
    assert status == wanted, response.text[:300]
    documented = operation.response(status)
    assert documented is not None, f"{operation.path} answered {status}, not in the document"
    media = operation.media(status)
    assert response.headers["content-type"].split(";")[0] == media
    if not body_expected:
        assert response.content == b""
        return
    if media == "application/json":
        body = response.json()
        validator = Draft202012Validator(operation.schema_ref(status), registry=target.schemas)
        errors = [e.message for e in validator.iter_errors(body)][:3]
        assert not errors, f"{call.url}: {errors}"
        if status >= 400:
            check_error(body, status)
    else:
        assert f'as of record <a href="/evidence/{last_seq}">{last_seq}</a>' in response.text
    if status != 200:
        return
    found = listing(operation.path)
    if found is not None:
        expected = expected_list(store, found.kind, call.arguments)
        if media == "application/json":
            assert [row["seq"] for row in response.json()] == expected
            assert all(row["url"] == f"/evidence/{row['seq']}" for row in response.json())
        else:
            assert [int(s) for s in re.findall(r'<tr data-seq="(\d+)"', response.text)] == expected
    if operation.path == "/api/evidence/{seq}":
        record = store.record(response.json()["seq"])
        assert record is not None
        assert response.json() == {**record.as_dict(), "url": f"/evidence/{record.seq}"}


def test_the_document_is_valid_and_routes_exactly_what_it_documents(
    app: Starlette, document: dict[str, Any]
) -> None:
    assert document["openapi"].startswith("3.1")
    for name, schema in document["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        assert name
    ids = []
    for operation in operations(document):
        ids.append(operation.spec["operationId"])
        for parameter in operation.parameters:
            Draft202012Validator.check_schema(parameter["schema"])
            if "default" in parameter["schema"]:
                assert within(parameter["schema"], str(parameter["schema"]["default"]))
        if (found := listing(operation.path)) is not None:
            (limit,) = [p for p in operation.parameters if p["name"] == "limit"]
            assert limit["schema"]["default"] == found.default_limit
        for status, response in operation.spec["responses"].items():
            (media,) = response["content"]
            if media == "application/json" and status != "200":
                assert response["content"][media]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }
    assert len(ids) == len(set(ids)), "operationIds are unique"
    routed = sorted(route.path for route in app.routes if isinstance(route, Route))
    assert routed == sorted(document["paths"])


def test_the_store_has_what_the_property_test_needs(store: Evidence) -> None:
    # so that the generated lists and records are not vacuous: a ratified demo's store
    kinds = {r.kind for r in store.records()}
    assert {"audit", "campaign", "check-run", "fingerprint", "rehearsal"} <= kinds
    assert len(store.records("campaign")) == 2
    assert len(store.records("audit")) > 100  # more than one default page of the audit log
