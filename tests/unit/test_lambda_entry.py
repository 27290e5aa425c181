"""The Lambda entry point removes a named stage's path prefix, and only that."""

from __future__ import annotations

from typing import Any

import pytest

from module_kit.lambda_entry import without_stage_prefix


def v2(path: str, stage: str) -> dict[str, Any]:
    return {
        "version": "2.0",
        "rawPath": path,
        "requestContext": {"stage": stage, "http": {"method": "GET", "path": path}},
    }


@pytest.mark.parametrize(
    ("path", "stage", "expected"),
    [
        ("/prod/loads/L-1", "prod", "/loads/L-1"),
        ("/prod", "prod", "/"),
        ("/loads/L-1", "$default", "/loads/L-1"),  # function URL, HTTP API $default
        ("/loads/L-1", "prod", "/loads/L-1"),  # a custom domain mapping removed it already
        ("/production/loads", "prod", "/production/loads"),  # a longer segment is not the stage
    ],
)
def test_a_named_stage_prefix_is_removed_from_both_paths(path, stage, expected):
    event = v2(path, stage)
    out = without_stage_prefix(event)
    assert out["rawPath"] == expected
    assert out["requestContext"]["http"]["path"] == expected
    assert event["rawPath"] == path, "the event given is not modified"


def test_rest_events_pass_unchanged():
    event = {"resource": "/{proxy+}", "path": "/loads", "requestContext": {"stage": "prod"}}
    assert without_stage_prefix(event) is event
