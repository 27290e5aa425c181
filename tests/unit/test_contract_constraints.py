"""The constraints Optic does not judge (relay/contracts/constraints.py): stricter where a
request is validated, looser where an answer is read, and nothing else."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from relay import contracts
from relay.contracts import constraints
from relay.openapi import render

EVENT = "#/components/schemas/Event"


def document() -> dict[str, Any]:
    """A module's document: a write whose body and parameter are constrained, and an answer
    that reuses the request's schema for its nested event (a ``$ref``, read on both sides)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/loads/{load_id}/events": {
                "post": {
                    "parameters": [
                        {
                            "in": "path",
                            "name": "load_id",
                            "required": True,
                            "schema": {"type": "string", "maxLength": 64},
                        }
                    ],
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": EVENT}}}},
                    "responses": {
                        "201": {
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "event": {"$ref": EVENT},
                                            "seq": {"type": "integer", "minimum": 1},
                                            "tags": {
                                                "type": "array",
                                                "items": {"type": "string", "maxLength": 20},
                                            },
                                        },
                                    }
                                }
                            }
                        }
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "Event": {
                    "type": "object",
                    "properties": {
                        "note": {"type": ["string", "null"], "maxLength": 500},
                        "stop_seq": {"type": "integer", "minimum": 1, "maximum": 20},
                        "code": {"type": "string"},
                    },
                }
            }
        },
    }


def edited(edit: Any) -> dict[str, Any]:
    after = document()
    edit(after)
    return after


def event(doc: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = doc["components"]["schemas"]["Event"]["properties"]
    return schema


def answer(doc: dict[str, Any]) -> dict[str, Any]:
    post = doc["paths"]["/loads/{load_id}/events"]["post"]
    schema: dict[str, Any] = post["responses"]["201"]["content"]["application/json"]["schema"]
    return schema["properties"]


def parameter(doc: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = doc["paths"]["/loads/{load_id}/events"]["post"]["parameters"][0]
    return schema["schema"]


def found(after: dict[str, Any]) -> set[tuple[str | None, str, str]]:
    """(field, side, rule) of each change found from :func:`document` to ``after``."""
    return {(f.field, f.side, f.rule) for f in constraints.changed(document(), after)}


def check_against(tmp_path: Path, after: dict[str, Any]) -> list[contracts.DocumentCheck]:
    """The package's check of ``after`` against :func:`document` released, with an Optic
    that finds nothing: what is refused is this module's finding alone."""

    class NoFindings:
        def breaking(self, before: Any, after: Any) -> list[contracts.Finding]:
            return []

    released = tmp_path / "baseline" / "loads"
    released.mkdir(parents=True)
    (released / contracts.OPENAPI_FILE).write_text(render(document()), encoding="utf-8")
    return contracts.check(
        ["loads"],
        baseline_dir=tmp_path / "baseline",
        pacts_dir=tmp_path / "no-pacts",
        optic=NoFindings(),  # type: ignore[arg-type]
        built={"loads": {contracts.OPENAPI_FILE: after}},
    )


NARROWED = constraints.RULES[constraints.REQUEST]
WIDENED = constraints.RULES[constraints.ANSWER]


def test_the_same_document_has_no_changes():
    assert constraints.changed(document(), document()) == []


def test_a_stricter_request_field_is_found_and_its_schema_in_the_answer_is_not():
    # GIVEN the shared event schema's note cut from 500 to 200 characters
    after = edited(lambda d: event(d)["note"].update(maxLength=200))

    # THEN the request refuses what old apps send; the answer's event only got stricter
    assert found(after) == {("note", "request", NARROWED)}
    (finding,) = constraints.changed(document(), after)
    assert finding.operation == ("POST", "/loads/{load_id}/events")
    assert "maxLength changed from 500 to 200" in finding.message


def test_a_looser_field_is_found_where_an_answer_carries_it():
    # GIVEN stop_seq allowed up to 30 and the answer's seq allowed from 0
    def loosen(d: dict[str, Any]) -> None:
        event(d)["stop_seq"]["maximum"] = 30
        answer(d)["seq"]["minimum"] = 0

    # THEN the request is fine with more; readers of the answer are not
    assert found(edited(loosen)) == {
        ("event.stop_seq", "response", WIDENED),
        ("seq", "response", WIDENED),
    }


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (  # a pattern added: stricter for the request; the answer's readers are fine
            lambda d: event(d)["code"].update(pattern="^[A-Z]+$"),
            {("code", "request", NARROWED)},
        ),
        (  # a bound removed: looser for the answer only
            lambda d: event(d)["stop_seq"].pop("maximum"),
            {("event.stop_seq", "response", WIDENED)},
        ),
        (  # a lower bound raised: stricter for the request only
            lambda d: event(d)["stop_seq"].update(minimum=2),
            {("stop_seq", "request", NARROWED)},
        ),
        (  # into array items
            lambda d: answer(d)["tags"]["items"].update(maxLength=40),
            {("tags[]", "response", WIDENED)},
        ),
        (  # a parameter
            lambda d: parameter(d).update(maxLength=32),
            {(None, "request", NARROWED)},
        ),
    ],
)
def test_each_kind_of_change_is_judged_on_the_side_that_reads_it(edit, expected):
    assert found(edited(edit)) == expected


def test_a_changed_pattern_is_found_on_both_sides():
    base = document()
    event(base)["code"]["pattern"] = "^[A-Z]+$"
    after = copy.deepcopy(base)
    event(after)["code"]["pattern"] = "^[A-Z0-9]+$"

    sides = {(f.field, f.side) for f in constraints.changed(base, after)}

    assert sides == {("code", "request"), ("event.code", "response")}


def test_a_parameter_finding_is_named_by_the_parameter(tmp_path: Path):
    after = edited(lambda d: parameter(d).update(maxLength=32))
    checks = check_against(tmp_path, after)

    (change,) = checks[0].breaking
    assert (change.side, change.field) == ("path parameter", "load_id")


def test_a_recursive_schema_is_walked_once():
    def recursive(d: dict[str, Any]) -> None:
        event(d)["parent"] = {"$ref": EVENT}

    before = edited(recursive)
    after = copy.deepcopy(before)
    event(after)["note"]["maxLength"] = 100

    fields = {f.field for f in constraints.changed(before, after)}

    assert fields == {"note"}  # parent is the schema being walked: not walked again


def test_the_check_refuses_a_narrowed_request_and_says_what_changed(tmp_path: Path):
    after = edited(lambda d: event(d)["note"].update(maxLength=200))

    (api,) = check_against(tmp_path, after)

    assert not api.ok
    report = "\n".join(api.describe())
    assert "POST /loads/{load_id}/events request field `note`" in report
    assert "maxLength changed from 500 to 200" in report
    assert NARROWED in report


def test_the_check_lets_a_widened_request_through(tmp_path: Path):
    after = edited(lambda d: parameter(d).update(maxLength=128))

    (api,) = check_against(tmp_path, after)

    assert api.changed and api.ok and api.breaking == ()
