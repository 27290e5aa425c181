"""The published mobile API document: current, complete, and saying what the gateway does.

The first test is the drift check: a contract change that is not followed by
``make openapi`` fails here, so every API change reaches review as a diff of
gateway/ops/openapi.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.ops.apidoc import DOCUMENT_FILE, install_openapi
from relay import openapi

PUBLIC_OPERATIONS = {("get", "/gatepass/keys")}


@pytest.fixture(scope="module")
def built() -> dict:
    return openapi.build_document()


@pytest.fixture(scope="module")
def published() -> dict:
    return json.loads(DOCUMENT_FILE.read_text(encoding="utf-8"))


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield method, path, op


def header_params(op: dict, name: str) -> list[dict]:
    return [
        p
        for p in op.get("parameters", [])
        if p["in"] == "header" and p["name"].lower() == name.lower()
    ]


def test_checked_in_document_is_current(built, published):
    # GIVEN the document built from the modules' contracts now
    # THEN the checked-in copy is that document, byte for byte
    stale = openapi.changes(published, built)
    assert published == built, (
        "run `make openapi` and commit gateway/ops/openapi.json; changed: " + ", ".join(stale)
    )
    assert DOCUMENT_FILE.read_text(encoding="utf-8") == openapi.render(built), (
        "run `make openapi` and commit gateway/ops/openapi.json (formatting differs)"
    )


def test_every_route_of_the_table_has_operations(published):
    table = openapi.load_routes()
    for route in table.routes:
        served = [(m, p) for m, p, _ in operations(published) if table.match(p) is route]
        assert served, f"route {route.prefix} ({route.module}) publishes no operation"


def test_every_operation_but_the_public_keys_requires_a_bearer_token(published):
    for method, path, op in operations(published):
        if (method, path) in PUBLIC_OPERATIONS:
            assert "security" not in op and "401" not in op["responses"]
        else:
            assert op.get("security") == [{"bearer": []}], f"{method} {path}"
            assert op["responses"]["401"]["content"]["application/problem+json"]
            assert op["responses"]["403"]["content"]["application/problem+json"]
    scheme = published["components"]["securitySchemes"]["bearer"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


def test_every_operation_documents_the_gateways_throttling_and_outage_answers(published):
    for method, path, op in operations(published):
        for status in ("429", "503"):
            answer = op["responses"][status]
            assert answer["content"]["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }, f"{status} of {method} {path}"
            assert "Retry-After" in answer["headers"]


def test_every_post_takes_one_optional_idempotency_key(published):
    posts = [(path, op) for method, path, op in operations(published) if method == "post"]
    assert posts
    for path, op in posts:
        [key] = header_params(op, "Idempotency-Key")
        assert key["required"] is False, path
        assert key["schema"]["pattern"] == "^[A-Za-z0-9_-]{8,64}$", path


def test_fallbacks_are_documented_where_the_route_table_names_them(published):
    paths = published["paths"]
    # GET with a fallback: the 200 may be a degraded copy
    assert "Relay-Degraded" in paths["/loads"]["get"]["responses"]["200"]["headers"]
    assert "Relay-Degraded" in paths["/loads"]["get"]["description"]
    # POST with a deferred fallback: 202 DeferredAccepted
    accepted = paths["/message"]["post"]["responses"]["202"]
    assert accepted["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DeferredAccepted"
    }
    assert "DeferredAccepted" in published["components"]["schemas"]
    # no fallback: neither
    dispatch = paths["/dispatch/messages"]["post"]["responses"]
    assert "202" not in dispatch and "headers" not in dispatch["201"]


def test_health_checks_and_the_identity_header_are_not_published(published):
    text = json.dumps(published).lower()
    assert "/healthz" not in text
    assert "x-relay-identity" not in text


def test_document_is_valid_openapi_3_1(published):
    assert published["openapi"].startswith("3.1.")
    assert published["info"]["title"] == "Relay mobile API"
    assert published["info"]["version"] == "0.1.0"  # pyproject's version
    assert published["paths"] and published["components"]["schemas"]
    for _, _, op in operations(published):
        for schema in openapi._refs(op):
            assert schema in published["components"]["schemas"]
    try:
        from openapi_spec_validator import validate
    except ImportError:  # comes with schemathesis; the structural checks above still ran
        return
    validate(published)


def test_conflicting_schemas_of_two_modules_are_refused():
    schemas = {"Stop": {"type": "object"}}
    openapi._merge(schemas, {"Stop": {"type": "object"}}, "same")
    with pytest.raises(openapi.OpenAPIBuildError, match="Stop"):
        openapi._merge(schemas, {"Stop": {"type": "string"}}, "other")


def test_check_reports_a_stale_file_and_write_fixes_it(tmp_path, built, capsys):
    # GIVEN a checked-in copy missing an operation
    stale = json.loads(json.dumps(built))
    del stale["paths"]["/navigate"]
    path = tmp_path / "openapi.json"
    path.write_text(openapi.render(stale))
    # WHEN checked, THEN it fails and names the change
    assert openapi.main(["--check", "--path", str(path)]) == 1
    assert "+ GET /navigate" in capsys.readouterr().err
    # WHEN regenerated, THEN the check passes
    assert openapi.main(["--path", str(path)]) == 0
    assert openapi.main(["--check", "--path", str(path)]) == 0


def test_install_openapi_serves_the_checked_in_document(published):
    app = FastAPI(openapi_url=None)
    install_openapi(app)
    response = TestClient(app).get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == published


def test_install_openapi_reads_the_file_once_at_start_up(tmp_path):
    path = tmp_path / "openapi.json"
    path.write_text('{"openapi": "3.1.0", "v": 1}')
    app = FastAPI(openapi_url=None)
    install_openapi(app, path)
    path.write_text('{"openapi": "3.1.0", "v": 2}')
    assert TestClient(app).get("/openapi.json").json()["v"] == 1


def test_gateway_serves_the_document_without_the_modules_code():
    # The gateway's artifact holds gateway/ and shared_contracts/ only.
    probe = (
        "import sys; from gateway.ops.apidoc import install_openapi; "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('modules', 'relay')]"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=Path(__file__).parents[2])
