"""The breaking-change check (relay/contracts/) with the real Optic, on edited copies of
the loads module's current documents against a baseline of the unedited ones.

Each case that compares documents runs Optic once (about 3 s): ``make test-contracts``
installs it first (``make optic``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from relay import contracts
from relay.contracts import baseline as baseline_check  # where the check reads documents()
from relay.openapi import render

LOAD_PATH = "/loads/L-1"


@pytest.fixture(scope="module")
def current() -> dict[str, dict[str, Any]]:
    """The loads module's documents as the tree builds them."""
    return contracts.documents("loads")


@pytest.fixture(scope="module")
def optic() -> contracts.Optic:
    checker = contracts.Optic()
    if not checker.executable.exists():
        pytest.fail("Optic is not installed: run `make optic`")
    return checker


@pytest.fixture
def baseline(tmp_path: Path, current) -> Path:
    """The released baseline: the current documents, unedited."""
    directory = tmp_path / "baseline"
    for name, document in current.items():
        (directory / "loads").mkdir(parents=True, exist_ok=True)
        (directory / "loads" / name).write_text(render(document), encoding="utf-8")
    return directory


def http_interaction(method: str, path: str, status: int, body: Any) -> dict[str, Any]:
    return {
        "type": "Synchronous/HTTP",
        "description": f"{method} {path}",
        "request": {"method": method, "path": path},
        "response": {
            "status": status,
            "body": {"content": body, "contentType": "application/json", "encoded": False},
        },
    }


def message_interaction(contents: Any) -> dict[str, Any]:
    return {
        "type": "Asynchronous/Messages",
        "description": "a load's stream image",
        "contents": {"content": contents, "contentType": "application/json", "encoded": False},
    }


@pytest.fixture
def pacts(tmp_path: Path) -> Path:
    """Three consumers of loads: one app reads a load's status, another reads only its
    stops, the gateway projects the stream image of its record (DynamoDB JSON)."""
    directory = tmp_path / "pacts"
    directory.mkdir()
    files = {
        "relay-app-5.1": [http_interaction("GET", LOAD_PATH, 200, {"status": "assigned"})],
        "relay-app-5.0": [
            http_interaction("GET", LOAD_PATH, 200, {"stops": [{"seq": 1}]}),
            http_interaction("POST", "/loads/L-1/events", 201, {"seq": 1}),
        ],
        "gateway": [
            message_interaction(
                {"doc": {"S": {"load_id": "L-1", "status": "assigned"}}, "version": {"N": "1"}}
            )
        ],
    }
    for consumer, interactions in files.items():
        pact = {
            "consumer": {"name": consumer},
            "provider": {"name": "loads"},
            "interactions": interactions,
            "metadata": {"pactSpecification": {"version": "4.0"}},
        }
        (directory / f"{consumer}-loads.json").write_text(json.dumps(pact), encoding="utf-8")
    return directory


def run(current, edit, baseline: Path, pacts: Path, optic) -> list[contracts.DocumentCheck]:
    edited = copy.deepcopy(current)
    edit(edited)
    return contracts.check(
        ["loads"], baseline_dir=baseline, pacts_dir=pacts, optic=optic, built={"loads": edited}
    )


def by_document(checks: list[contracts.DocumentCheck]) -> dict[str, contracts.DocumentCheck]:
    return {c.document: c for c in checks}


def schema(documents: dict[str, Any], document: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = documents[document]["components"]["schemas"][name]
    return found


def remove_status(documents: dict[str, Any], *, events: bool = True) -> None:
    for document in (contracts.OPENAPI_FILE, contracts.EVENTS_FILE)[: 2 if events else 1]:
        load = schema(documents, document, "LoadPublic")
        del load["properties"]["status"]
        load["required"].remove("status")


def as_v2(documents: dict[str, Any]) -> None:
    """Without status in its answers, declared as contract 2 (its events left alone)."""
    remove_status(documents, events=False)
    documents[contracts.OPENAPI_FILE]["info"]["version"] = "2"


def test_a_removed_answer_field_is_refused_naming_the_field_and_its_consumers(
    current, baseline, pacts, optic
):
    # GIVEN loads' answers and its record without `status`, which an app and the gateway read
    checks = by_document(run(current, remove_status, baseline, pacts, optic))

    # THEN both documents are refused, each change named with its operation and readers
    api, events = checks[contracts.OPENAPI_FILE], checks[contracts.EVENTS_FILE]
    assert not api.ok and not events.ok and not contracts.ok(checks.values())
    changes = {(c.operation, c.field): c for c in api.breaking}
    read = changes[("GET /loads/{load_id}", "status")]
    assert read.consumers == ("relay-app-5.1",)  # 5.0 reads the stops only
    assert changes[("GET /loads", "items[].status")].consumers == ()
    assert changes[("POST /loads/{load_id}/events", "load.status")].side == "response"
    record = {(c.operation, c.field): c for c in events.breaking}[("event load", "status")]
    assert record.consumers == ("gateway",)
    report = "\n".join(api.describe())
    assert "GET /loads/{load_id} 200 response field `status`" in report
    assert "consumers: relay-app-5.1" in report
    assert "refused" in report and "relay contracts release loads" in report


def test_an_added_optional_answer_field_passes(current, baseline, pacts, optic):
    def add_field(documents: dict[str, Any]) -> None:
        load = schema(documents, contracts.OPENAPI_FILE, "LoadPublic")
        load["properties"]["seal_number"] = {"type": "string", "title": "Seal Number"}

    checks = by_document(run(current, add_field, baseline, pacts, optic))

    api = checks[contracts.OPENAPI_FILE]
    assert api.changed and api.ok and api.breaking == ()
    assert "changed compatibly" in api.describe()[0]
    assert not checks[contracts.EVENTS_FILE].changed


def test_a_new_required_request_field_is_refused(current, baseline, pacts, optic):
    def require_odometer(documents: dict[str, Any]) -> None:
        event = schema(documents, contracts.OPENAPI_FILE, "LoadEventCreate")
        event["properties"]["odometer_km"] = {"type": "integer", "title": "Odometer Km"}
        event["required"].append("odometer_km")

    api = by_document(run(current, require_odometer, baseline, pacts, optic))[
        contracts.OPENAPI_FILE
    ]

    assert not api.ok
    (change,) = api.breaking
    assert (change.operation, change.side, change.field) == (
        "POST /loads/{load_id}/events",
        "request",
        "odometer_km",
    )
    assert change.consumers == ("relay-app-5.0",)  # the one that reports events


def test_a_renamed_operation_and_a_changed_status_code_are_refused(current, baseline, pacts, optic):
    def rename_and_recode(documents: dict[str, Any]) -> None:
        paths = documents[contracts.OPENAPI_FILE]["paths"]
        paths["/dispatch/loads"] = paths.pop("/dispatch/assignments")
        responses = paths["/loads/{load_id}/events"]["post"]["responses"]
        responses["200"] = responses.pop("201")

    api = by_document(run(current, rename_and_recode, baseline, pacts, optic))[
        contracts.OPENAPI_FILE
    ]

    changes = {(c.operation, c.side, c.status): c for c in api.breaking}
    assert set(changes) == {  # one change each, not one more per field of their bodies
        ("POST /dispatch/assignments", "operation", None),
        ("POST /loads/{load_id}/events", "response", "201"),
    }
    recoded = changes[("POST /loads/{load_id}/events", "response", "201")]
    assert recoded.consumers == ("relay-app-5.0",)  # it expects the 201
    assert "POST /loads/{load_id}/events 201: " in recoded.describe()


def test_a_new_major_may_break_and_says_what_it_breaks(current, baseline, pacts, optic):
    checks = run(current, as_v2, baseline, pacts, optic)

    assert contracts.ok(checks)
    api = by_document(checks)[contracts.OPENAPI_FILE]
    assert api.new_major and api.breaking
    assert api.describe()[0].startswith("loads/openapi.json: new major 2 (released 1)")
    assert not by_document(checks)[contracts.EVENTS_FILE].changed


class OneBreak(contracts.Optic):
    """Optic as it answers a removed ``status``: releasing is judged on its findings (the
    real Optic's are the tests above), without running it."""

    def breaking(self, before: dict[str, Any], after: dict[str, Any]) -> list[contracts.Finding]:
        pointer = "/paths/~1loads~1{load_id}/get/responses/200/content/application~1json"
        return [
            contracts.Finding(
                f"{pointer}/schema/properties/status",
                "prevent removing response property",
                "cannot remove response property 'status'.",
            )
        ]


def test_release_refuses_a_break_without_a_new_major_and_records_a_new_one(
    current, baseline, pacts, monkeypatch
):
    api_file = baseline / "loads" / contracts.OPENAPI_FILE
    released = api_file.read_text(encoding="utf-8")

    def the_tree(edit):
        edited = copy.deepcopy(current)
        edit(edited)
        monkeypatch.setattr(baseline_check, "documents", lambda module: edited)

    def release() -> list[Path]:
        return contracts.release(
            ["loads"], baseline_dir=baseline, pacts_dir=pacts, optic=OneBreak()
        )

    the_tree(lambda documents: remove_status(documents, events=False))
    with pytest.raises(contracts.ContractsError, match="not released") as refused:
        release()
    assert "GET /loads/{load_id} 200 response field `status`" in str(refused.value)
    assert "consumers: relay-app-5.1" in str(refused.value)
    assert api_file.read_text(encoding="utf-8") == released

    the_tree(as_v2)
    written = release()

    assert written == [api_file]
    assert json.loads(api_file.read_text(encoding="utf-8"))["info"]["version"] == "2"
    assert (
        "status"
        not in json.loads(api_file.read_text(encoding="utf-8"))["components"]["schemas"][
            "LoadPublic"
        ]["properties"]
    )


def test_nullable_fields_are_compared_as_type_lists():
    document = {
        "components": {"schemas": {"Hours": {"type": "object", "properties": {}}}},
        "x": {
            "trailer": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Trailer"},
            "hours": {"anyOf": [{"$ref": "#/components/schemas/Hours"}, {"type": "null"}]},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
    }

    rewritten = contracts.comparable(document)["x"]

    assert rewritten["trailer"] == {"type": ["string", "null"], "title": "Trailer"}
    assert rewritten["hours"] == {"type": ["object", "null"], "properties": {}}
    assert rewritten["either"] == document["x"]["either"]  # a real union stays one


def test_the_tree_builds_every_modules_documents():
    built = {module: contracts.documents(module) for module in contracts.modules()}

    assert set(built) == {"loads", "gatepass", "navigate", "message", "notifications"}
    assert contracts.OPENAPI_FILE not in built["notifications"]  # a worker: events only
    events = built["gatepass"][contracts.EVENTS_FILE]
    assert set(events["paths"]) == {"/events/pass", "/events/revocation", "/events/keys"}
    assert events["info"]["version"] == built["gatepass"][contracts.OPENAPI_FILE]["info"]["version"]


def test_a_document_no_longer_published_is_refused_and_not_released(
    current, baseline, pacts, optic, monkeypatch
):
    # GIVEN loads without its HTTP app: only its events are published
    events_only = {contracts.EVENTS_FILE: current[contracts.EVENTS_FILE]}
    monkeypatch.setattr(baseline_check, "documents", lambda module: events_only)

    checks = by_document(
        contracts.check(["loads"], baseline_dir=baseline, pacts_dir=pacts, optic=optic)
    )

    gone = checks[contracts.OPENAPI_FILE]
    assert gone.current is None and not gone.ok
    assert "no longer published" in gone.describe()[0]
    with pytest.raises(contracts.ContractsError, match="no longer published"):
        contracts.release(["loads"], baseline_dir=baseline, pacts_dir=pacts, optic=optic)
    assert (baseline / "loads" / contracts.OPENAPI_FILE).exists()


def test_a_stricter_request_constraint_is_refused_though_optic_does_not_judge_it(
    current, baseline, pacts, optic
):
    # GIVEN a trip event's note cut from 500 characters to 200: an old app's long note
    # would now be refused
    def shorter_note(documents: dict[str, Any]) -> None:
        note = schema(documents, contracts.OPENAPI_FILE, "LoadEventCreate")["properties"]["note"]
        text = next(v for v in note["anyOf"] if v.get("type") == "string")
        text["maxLength"] = 200

    api = by_document(run(current, shorter_note, baseline, pacts, optic))[contracts.OPENAPI_FILE]

    # THEN it is refused, named with its field and the app that posts events
    assert not api.ok
    (change,) = api.breaking
    assert (change.operation, change.side, change.field) == (
        "POST /loads/{load_id}/events",
        "request",
        "note",
    )
    assert "maxLength changed from 500 to 200" in change.message
    assert change.consumers == ("relay-app-5.0",)
