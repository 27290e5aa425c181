"""The Lambda handler counts each answer per function version, as EMF on stdout.

The EMF lines are what CloudWatch turns into the ``Relay`` metrics the canary alarms and
the post-traffic hook read: one line per invocation, flushed before the handler returns.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from module_kit.lambda_entry import SMOKE_MARKER, lambda_handler


class LambdaContext:
    function_name = "relay-loads"
    function_version = "7"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:relay-loads:live"
    aws_request_id = "req-1"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 10_000


class NoVersionContext(LambdaContext):
    function_version = None  # type: ignore[assignment]


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/status/{code}")
    def status(code: int) -> JSONResponse:
        return JSONResponse({"status": code}, status_code=code)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("unhandled")

    return app


def url_event(path: str, **extra: Any) -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "abc.lambda-url.us-east-1.on.aws"},
        "requestContext": {
            "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1"},
            "requestId": "r-1",
            "routeKey": "$default",
            "stage": "$default",
        },
        "isBase64Encoded": False,
        **extra,
    }


def emf_lines(out: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" in line]


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "loads")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    return lambda_handler(make_app())


@pytest.mark.parametrize(
    ("code", "five_xx", "unauthorized"),
    [(200, 0, 0), (404, 0, 0), (401, 0, 1), (500, 1, 0), (503, 1, 0)],
)
def test_each_answer_is_counted_under_the_running_version(
    handler, capsys, code, five_xx, unauthorized
):
    # WHEN the version 7 answers once
    response = handler(url_event(f"/status/{code}"), LambdaContext())
    # THEN one EMF line counts it, with the service and the version as its dimensions
    assert response["statusCode"] == code
    (line,) = emf_lines(capsys.readouterr().out)
    directive = line["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Relay"
    assert directive["Dimensions"] == [["function_version", "service"]]
    assert {m["Name"] for m in directive["Metrics"]} == {"Answers", "Answers5xx", "Answers401"}
    assert (line["service"], line["function_version"]) == ("loads", "7")
    assert line["Answers"] == [1.0]
    assert line["Answers5xx"] == [float(five_xx)]
    assert line["Answers401"] == [float(unauthorized)]


def test_every_invocation_is_flushed_on_its_own(handler, capsys):
    for code in (200, 401, 503):
        handler(url_event(f"/status/{code}"), LambdaContext())
    lines = emf_lines(capsys.readouterr().out)
    assert [line["Answers"] for line in lines] == [[1.0]] * 3, "one line each, none merged"
    assert [line["Answers401"][0] + 2 * line["Answers5xx"][0] for line in lines] == [0, 1, 2]


def test_an_unhandled_exception_is_a_5xx_answer(handler, capsys):
    response = handler(url_event("/boom"), LambdaContext())
    assert response["statusCode"] == 500
    (line,) = emf_lines(capsys.readouterr().out)
    assert line["Answers5xx"] == [1.0]


def test_an_event_the_handler_cannot_read_counts_as_5xx_and_still_fails(handler, capsys):
    with pytest.raises(RuntimeError):
        handler({"not": "an http event"}, LambdaContext())
    (line,) = emf_lines(capsys.readouterr().out)
    assert (line["Answers"], line["Answers5xx"]) == ([1.0], [1.0])


def test_the_service_dimension_can_be_named_when_the_handler_is_built(monkeypatch, capsys):
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "something-else")
    handler = lambda_handler(make_app(), service="gateway")
    handler(url_event("/status/200"), LambdaContext())
    (line,) = emf_lines(capsys.readouterr().out)
    assert line["service"] == "gateway"


def test_nothing_is_emitted_without_a_lambda_version(handler, capsys):
    response = handler(url_event("/status/503"), NoVersionContext())
    assert response["statusCode"] == 503
    assert emf_lines(capsys.readouterr().out) == []


def test_the_deploy_hooks_smoke_requests_are_not_counted(handler, capsys):
    response = handler(url_event("/status/401", **{SMOKE_MARKER: True}), LambdaContext())
    assert response["statusCode"] == 401
    assert emf_lines(capsys.readouterr().out) == []
