"""App versions at the edge: parsing, the route table's [app] block and per-route fields,
the deprecation headers, the step's decisions and what it counts (no network)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime

import pytest

from gateway.edge.appversion import (
    MAX_VERSION_LABELS,
    AppVersion,
    AppVersions,
    CheckAppVersion,
    Deprecation,
    parse_version,
    version_in_user_agent,
    warn_past_sunset,
)
from gateway.ops.metrics import RequestMetrics, emit_last
from gateway.routing.routes import RouteTable, RouteTableError
from relay.openapi import load_routes
from shared_contracts.errors import InvalidAppVersionError, UpgradeRequiredError

pytestmark = pytest.mark.anyio

LINK = "https://docs.relay.example/deprecations/x"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def table(app: dict | None = None, **route: object) -> RouteTable:
    data: dict = {
        "modules": {"loads": {"tier": "optional", "upstream": "http://loads.test"}},
        "routes": [{"prefix": "/loads", "module": "loads", "roles": ["driver"], **route}],
    }
    if app is not None:
        data["app"] = app
    return RouteTable.from_dict(data, env={})


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("5.2.0", AppVersion(5, 2, 0)),
        ("5.2", AppVersion(5, 2, 0)),
        (" 5.10.3 ", AppVersion(5, 10, 3)),
        ("5.3.0-beta.2", AppVersion(5, 3, 0)),
        ("5.2.1+817", AppVersion(5, 2, 1)),
    ],
)
def test_versions_parse_to_comparable_numbers(text, version):
    assert parse_version(text) == version


@pytest.mark.parametrize("text", ["", "5", "v5.2.0", "5.2.0.1", "five", "5..2", "5.2.x", "-1.0"])
def test_malformed_versions_are_refused(text):
    with pytest.raises(ValueError, match="not an app version"):
        parse_version(text)


def test_versions_compare_as_numbers_not_text():
    assert parse_version("5.10") > parse_version("5.9.9") > parse_version("4.99")
    assert parse_version("5.0.0").label == "5.0"


def test_the_version_is_found_in_the_apps_user_agent_only():
    assert version_in_user_agent("RelayApp/5.2.0 (Android 14)") == "5.2.0"
    assert version_in_user_agent("okhttp/4.12 RelayApp/5.1.3") == "5.1.3"
    assert version_in_user_agent("curl/8.5.0") is None
    assert version_in_user_agent("NotRelayApp/5.2.0") is None


# --- configuration ---------------------------------------------------------------------


def test_the_shipped_table_sets_the_minimum_and_serves_without_a_version():
    shipped = load_routes()
    assert shipped.app.minimum == AppVersion(5, 0, 0)
    assert shipped.app.without_version == "serve"


def test_a_table_without_an_app_block_has_no_minimum():
    assert table().app.minimum is None
    assert table().app.without_version == "serve"


@pytest.mark.parametrize(
    ("app", "route", "message"),
    [
        ({"min_version": "five"}, {}, "app: min_version: 'five' is not an app version"),
        ({"without_version": "drop"}, {}, "app: without_version"),
        ({"minimum": "5.0"}, {}, "app: minimum: Extra inputs"),
        ({}, {"min_app_version": "5.x"}, "route /loads: min_app_version: '5.x' is not"),
        (
            {"min_version": "5.1"},
            {"min_app_version": "5.0.9"},
            "min_app_version 5.0.9 is not above [app] min_version 5.1",
        ),
        ({}, {"deprecated": {"get": {"since": "2026-11-01", "link": LINK}}}, "'get' is not"),
        ({}, {"deprecated": {"GET": {"since": "2026-11-01"}}}, "deprecated.GET.link: Field"),
        ({}, {"deprecated": {"GET": {"since": "1 Nov", "link": LINK}}}, "deprecated.GET.since"),
        (
            {},
            {"deprecated": {"GET": {"since": "2026-11-01", "link": "http://x.example/"}}},
            "deprecated.GET.link: String should match",
        ),
        (
            {},
            {"deprecated": {"GET": {"since": "2027-03-01", "sunset": "2027-03-01", "link": LINK}}},
            "sunset (2027-03-01) must come after since (2027-03-01)",
        ),
    ],
)
def test_a_bad_app_setting_stops_start_up(app, route, message):
    with pytest.raises(RouteTableError) as info:
        table(app, **route)
    assert message in str(info.value)


def test_the_app_block_must_be_a_table():
    with pytest.raises(RouteTableError, match="app: must be a table"):
        RouteTable.from_dict({"app": "5.0", "modules": {}, "routes": []}, env={})


def test_dates_may_be_written_as_toml_dates_or_strings_and_dump_as_written():
    as_date = Deprecation(since=date(2026, 11, 1), link=LINK)
    assert Deprecation.model_validate({"since": "2026-11-01", "link": LINK}) == as_date
    # a dumped table (tests build variants of the shipped one) loads again, also as JSON
    dumped = json.loads(json.dumps(as_date.model_dump()))
    assert dumped == {"since": "2026-11-01", "sunset": None, "link": LINK}
    assert Deprecation.model_validate(dumped) == as_date


# --- the headers -----------------------------------------------------------------------


def test_a_deprecation_answers_with_rfc_9745_and_rfc_8594_headers():
    dep = Deprecation(since=date(2026, 11, 1), sunset=date(2027, 3, 1), link=LINK)
    assert dep.headers() == [
        (b"deprecation", b"@1793491200"),  # 2026-11-01T00:00:00Z
        (b"sunset", b"Mon, 01 Mar 2027 00:00:00 GMT"),
        (b"link", f'<{LINK}>; rel="deprecation"; type="text/html"'.encode()),
    ]
    assert datetime.fromtimestamp(1793491200, UTC) == datetime(2026, 11, 1, tzinfo=UTC)
    # no sunset set: no Sunset header
    assert [name for name, _ in Deprecation(since=date(2026, 11, 1), link=LINK).headers()] == [
        b"deprecation",
        b"link",
    ]


def test_operations_past_their_sunset_are_named_at_start_up_by_the_wall_clock(caplog):
    dep = {"since": "2026-11-01", "sunset": "2027-03-01", "link": LINK}
    versions = AppVersions(table(deprecated={"GET": dep, "POST": {**dep, "sunset": None}}))
    before = datetime(2027, 2, 28, 23, 59, tzinfo=UTC).timestamp()
    on_the_day = datetime(2027, 3, 1, tzinfo=UTC).timestamp()
    assert list(versions.past_sunset(before)) == []
    assert list(versions.past_sunset(on_the_day)) == ["GET /loads"]  # POST has no sunset
    with caplog.at_level(logging.WARNING, logger="relay.gateway"):
        warn_past_sunset(versions, lambda: on_the_day)
    assert "GET /loads is past its sunset and still routed" in caplog.text


# --- the step --------------------------------------------------------------------------


class Downstream:
    """The rest of the pipeline: answers 200 with one header, and remembers it was called."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"1")]})
        await send({"type": "http.response.body", "body": b"{}"})


async def call(step: CheckAppVersion, route_table: RouteTable, *headers, method="GET"):
    scope = {
        "type": "http",
        "method": method,
        "path": "/loads",
        "headers": list(headers),
        "state": {"route": route_table.match("/loads")},
    }
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    await step(scope, receive, send)
    return scope, sent


def step_for(route_table: RouteTable) -> tuple[CheckAppVersion, Downstream, RequestMetrics]:
    metrics = RequestMetrics()
    downstream = Downstream()
    return CheckAppVersion(downstream, AppVersions(route_table, metrics)), downstream, metrics


async def test_an_app_older_than_the_minimum_gets_426_naming_the_minimum():
    routes = table({"min_version": "5.0"})
    step, downstream, metrics = step_for(routes)
    with pytest.raises(UpgradeRequiredError) as info:
        await call(step, routes, (b"relay-app-version", b"4.9.3"))
    assert info.value.status == 426
    assert info.value.to_problem().type == "urn:relay:problem:upgrade-required"
    assert "needs the Relay app 5.0 or newer (this app is 4.9.3)" in str(info.value.detail)
    assert "App Store or Google Play" in str(info.value.detail)
    assert info.value.headers == {"Relay-App-Min-Version": "5.0"}
    assert downstream.calls == 0
    assert metrics.app_versions == {"older-than-min": 1}


async def test_the_minimum_and_newer_apps_are_served_and_counted_by_major_minor():
    routes = table({"min_version": "5.0"})
    step, downstream, metrics = step_for(routes)
    for version in (b"5.0.0", b"5.0.4", b"5.2.0", b"5.2.0"):
        scope, sent = await call(step, routes, (b"relay-app-version", version))
        assert sent[0]["status"] == 200
    assert downstream.calls == 4
    assert metrics.app_versions == {"5.0": 2, "5.2": 2}
    assert metrics.last_app_version == "5.2"
    # the headers were read into a dict once, for Authenticate and Forward
    assert scope["state"]["headers"] == {b"relay-app-version": b"5.2.0"}


async def test_a_route_may_ask_for_a_newer_app_than_the_table():
    routes = table({"min_version": "5.0"}, min_app_version="5.1")
    step, downstream, _ = step_for(routes)
    with pytest.raises(UpgradeRequiredError, match=r"needs the Relay app 5\.1 or newer"):
        await call(step, routes, (b"relay-app-version", b"5.0.9"))
    await call(step, routes, (b"relay-app-version", b"5.1.0"))
    assert downstream.calls == 1


async def test_the_header_wins_over_the_user_agent():
    routes = table({"min_version": "5.0"})
    step, downstream, metrics = step_for(routes)
    with pytest.raises(UpgradeRequiredError):
        await call(
            step,
            routes,
            (b"user-agent", b"RelayApp/5.2.0 (Android 14)"),
            (b"relay-app-version", b"4.8.0"),
        )
    await call(step, routes, (b"user-agent", b"RelayApp/5.1.2 (iOS 18.1)"))
    assert downstream.calls == 1
    assert metrics.app_versions == {"older-than-min": 1, "5.1": 1}


async def test_a_malformed_version_is_a_400_in_the_header_or_the_apps_user_agent():
    routes = table({"min_version": "5.0"})
    step, downstream, metrics = step_for(routes)
    for header in ((b"relay-app-version", b"latest"), (b"user-agent", b"RelayApp/five (x)")):
        with pytest.raises(InvalidAppVersionError) as info:
            await call(step, routes, header)
        assert info.value.status == 400
        assert info.value.to_problem().type == "urn:relay:problem:invalid-app-version"
    assert downstream.calls == 0
    assert metrics.app_versions == {"invalid": 2}


async def test_without_a_version_a_request_is_served_and_counted_as_none():
    routes = table({"min_version": "5.0"})
    step, downstream, metrics = step_for(routes)
    await call(step, routes)  # no header at all
    await call(step, routes, (b"user-agent", b"curl/8.5.0"))  # not the app
    assert downstream.calls == 2
    assert metrics.app_versions == {"none": 2}


async def test_the_table_may_refuse_a_request_without_a_version():
    routes = table({"min_version": "5.0", "without_version": "refuse"})
    step, downstream, metrics = step_for(routes)
    with pytest.raises(UpgradeRequiredError, match="does not say which app sent it"):
        await call(step, routes, (b"user-agent", b"curl/8.5.0"))
    assert downstream.calls == 0
    assert metrics.app_versions == {"older-than-min": 1}


async def test_versions_past_the_label_limit_are_counted_as_other():
    routes = table()
    step, _, metrics = step_for(routes)
    for minor in range(MAX_VERSION_LABELS + 5):
        await call(step, routes, (b"relay-app-version", f"9.{minor}.0".encode()))
    await call(step, routes, (b"relay-app-version", b"9.0.1"))  # a label already counted
    assert len(metrics.app_versions) == MAX_VERSION_LABELS + 1
    assert metrics.app_versions["other"] == 5
    assert metrics.app_versions["9.0"] == 2


async def test_a_version_is_parsed_once_per_header_value(monkeypatch):
    routes = table({"min_version": "5.0"})
    step, _, _ = step_for(routes)
    parsed: list[str] = []
    import gateway.edge.appversion as module

    real = module.parse_version
    monkeypatch.setattr(module, "parse_version", lambda text: parsed.append(text) or real(text))
    for _ in range(3):
        await call(step, routes, (b"relay-app-version", b"5.2.0"))
        await call(step, routes, (b"user-agent", b"RelayApp/5.1.0 (Android 14)"))
    assert parsed == ["5.2.0", "5.1.0"]


async def test_a_deprecated_operations_answers_carry_its_headers_and_others_do_not():
    dep = {"since": "2026-11-01", "sunset": "2027-03-01", "link": LINK}
    routes = table(deprecated={"GET": dep})
    step, _, _ = step_for(routes)
    scope, sent = await call(step, routes, (b"relay-app-version", b"5.2.0"))
    headers = dict(sent[0]["headers"])
    assert headers[b"a"] == b"1"  # the answer's own headers kept
    assert headers[b"deprecation"] == b"@1793491200"
    assert headers[b"sunset"] == b"Mon, 01 Mar 2027 00:00:00 GMT"
    assert headers[b"link"].startswith(f"<{LINK}>".encode())
    # a problem answer given later in the pipeline gets them from ProblemAnswers
    assert scope["state"]["answer_headers"] == Deprecation.model_validate(dep).headers()
    _, sent = await call(step, routes, (b"relay-app-version", b"5.2.0"), method="POST")
    assert dict(sent[0]["headers"]) == {b"a": b"1"}


def test_in_lambda_the_requests_app_version_goes_out_as_its_own_emf_line(capsys):
    metrics = RequestMetrics()
    metrics.record("loads", "loads", "/loads", "live", 200, 0.004)
    metrics.last_app_version = "5.2"
    emit_last(metrics)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    by_version = lines[1]
    assert by_version["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["app_version", "service"]]
    assert by_version["app_version"] == "5.2"
    assert by_version["relay_gateway_requests_by_app_version_total"] == [1.0]
    assert "app_version" not in lines[0]  # the requests' own dimension set is unchanged
    assert metrics.last_app_version is None
