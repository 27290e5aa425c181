"""Conditional GETs on routes with ``etag = true`` (``gateway.forwarding.conditional``):
strong ETags on GET 200 answers, live and degraded, and If-None-Match answered with 304."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from gateway.forwarding.conditional import entity_tag, if_none_match_tags, source_of
from gateway.routing.routes import RouteTable, RouteTableError
from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.identity import Role
from tests.unit.gateway.test_resilience import LOAD, a_gate_pass, a_load

STRONG = re.compile(r'^"[0-9a-f]{32}"$')
LOADS = "http://loads.test/loads"
DOCUMENT = Path(__file__).resolve().parents[3] / "gateway" / "ops" / "openapi.json"


def listing(*loads: dict) -> httpx.Response:
    return httpx.Response(200, json={"items": list(loads or [LOAD])})


def test_a_live_list_has_a_strong_etag_and_revalidation_headers(gateway, upstream, bearer):
    upstream.get(LOADS).mock(return_value=listing())
    r = gateway.get("/loads", headers=bearer())
    assert r.status_code == 200
    assert STRONG.match(r.headers["etag"])
    assert r.headers["etag"] == entity_tag(r.content, b"application/json").decode()
    assert r.headers["cache-control"] == "private, no-cache"
    assert r.headers["vary"] == "Authorization"


def test_the_same_tag_is_a_304_without_a_body_that_keeps_the_headers(gateway, upstream, bearer):
    route = upstream.get(LOADS).mock(return_value=listing())
    first = gateway.get("/loads", headers=bearer())
    tag = first.headers["etag"]
    again = gateway.get("/loads", headers={**bearer(), "if-none-match": tag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == tag
    assert again.headers["cache-control"] == "private, no-cache"
    assert again.headers["vary"] == "Authorization"
    assert "content-type" not in again.headers and "relay-degraded" not in again.headers
    assert route.call_count == 2  # the module is still asked: the tag is of its answer


@pytest.mark.parametrize(
    "field",
    [
        '"0123", {tag}',
        "W/{tag}",  # weak comparison
        '"0123" , W/"4567",{tag}',
        "*",
    ],
)
def test_if_none_match_lists_weak_tags_and_star(gateway, upstream, bearer, field):
    upstream.get(LOADS).mock(return_value=listing())
    tag = gateway.get("/loads", headers=bearer()).headers["etag"]
    r = gateway.get("/loads", headers={**bearer(), "if-none-match": field.format(tag=tag)})
    assert r.status_code == 304 and r.content == b""


def test_another_tag_or_a_changed_body_is_a_200_with_a_new_tag(gateway, upstream, bearer):
    route = upstream.get(LOADS).mock(return_value=listing())
    tag = gateway.get("/loads", headers=bearer()).headers["etag"]
    other = gateway.get("/loads", headers={**bearer(), "if-none-match": '"not-it"'})
    assert other.status_code == 200 and other.headers["etag"] == tag and other.json()["items"]
    route.mock(return_value=listing(LOAD, a_load("L-2")))
    changed = gateway.get("/loads", headers={**bearer(), "if-none-match": tag})
    assert changed.status_code == 200
    assert len(changed.json()["items"]) == 2
    assert STRONG.match(changed.headers["etag"]) and changed.headers["etag"] != tag


def test_a_load_and_a_gate_pass_detail_are_tagged_too(gateway, upstream, bearer):
    upstream.get(f"{LOADS}/L-1").mock(return_value=httpx.Response(200, json=LOAD))
    upstream.get("http://gatepass.test/gatepass/P-1").mock(
        return_value=httpx.Response(200, json=a_gate_pass("P-1"))
    )
    for path in ("/loads/L-1", "/gatepass/P-1"):
        tag = gateway.get(path, headers=bearer()).headers["etag"]
        assert STRONG.match(tag)
        assert gateway.get(path, headers={**bearer(), "if-none-match": tag}).status_code == 304


def tagged_listing(*loads: dict) -> httpx.Response:
    """A list as the loads module answers it: with its own tag (module_kit.etag)."""
    body = json.dumps({"items": list(loads or [LOAD])}).encode()
    tag = entity_tag(body, b"application/json").decode()
    headers = {"content-type": "application/json", "etag": tag}
    return httpx.Response(
        200, content=body, headers={**headers, "cache-control": "private, no-cache"}
    )


def test_the_modules_strong_etag_is_passed_on_without_hashing(
    gateway, upstream, bearer, monkeypatch
):
    # GIVEN a module that tags its list itself
    answer = tagged_listing()
    route = upstream.get(LOADS).mock(return_value=answer)

    def no_hash(*args: object) -> bytes:
        raise AssertionError("the gateway hashed a body its module had tagged")

    monkeypatch.setattr("gateway.forwarding.conditional.entity_tag", no_hash)
    # WHEN the app polls the list, then revalidates it
    r = gateway.get("/loads", headers=bearer())
    again = gateway.get("/loads", headers={**bearer(), "if-none-match": r.headers["etag"]})
    # THEN the module's tag is the answer's, once, with the revalidation headers
    assert r.status_code == 200 and r.headers.get_list("etag") == [answer.headers["etag"]]
    assert r.headers["cache-control"] == "private, no-cache"
    assert r.headers["vary"] == "Authorization"
    # AND a matching If-None-Match is a 304 made by the gateway, not asked of the module
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == answer.headers["etag"]
    assert route.call_count == 2
    assert all("if-none-match" not in call.request.headers for call in route.calls)


def test_an_untagged_module_answer_gets_the_same_tag_as_a_tagged_one(gateway, upstream, bearer):
    # An older module version sends no tag: the gateway makes the one the module would.
    route = upstream.get(LOADS).mock(return_value=tagged_listing())
    tagged = gateway.get("/loads", headers=bearer())
    route.mock(return_value=httpx.Response(200, content=tagged.content, headers={}))
    untagged = gateway.get("/loads", headers={**bearer(), "if-none-match": tagged.headers["etag"]})
    assert untagged.status_code == 304 and untagged.headers["etag"] == tagged.headers["etag"]


@pytest.mark.parametrize(
    "module_tags",
    [['W/"module"'], ["module"], ['"one"', '"two"']],  # weak, not a tag, two of them
)
def test_a_modules_weak_or_malformed_etag_is_replaced_by_the_gateways(
    gateway, upstream, bearer, module_tags
):
    headers = [("content-type", "application/json"), *(("etag", t) for t in module_tags)]
    upstream.get(LOADS).mock(
        return_value=httpx.Response(200, content=json.dumps({"items": [LOAD]}), headers=headers)
    )
    r = gateway.get("/loads", headers=bearer())
    assert r.headers.get_list("etag") == [entity_tag(r.content, b"application/json").decode()]


def test_a_degraded_copy_of_a_tagged_list_never_has_the_modules_tag(gateway, upstream, bearer):
    # GIVEN the module's tagged list, kept as the last-known-good copy
    route = upstream.get(LOADS).mock(return_value=tagged_listing())
    live = gateway.get("/loads", headers=bearer())
    # WHEN the module is down and the app revalidates with the live tag
    route.mock(side_effect=httpx.ConnectError("down"))
    degraded = gateway.get("/loads", headers={**bearer(), "if-none-match": live.headers["etag"]})
    # THEN the same bytes come whole under the gateway's tag of the copy and its source
    assert degraded.status_code == 200 and degraded.content == live.content
    assert degraded.headers["etag"] == (
        entity_tag(
            degraded.content, b"application/json", b"module=loads; fallback=last-known-good"
        ).decode()
    )
    assert degraded.headers["etag"] != live.headers["etag"]
    # AND once the module is back its own tag is the answer's again
    route.mock(return_value=tagged_listing())
    back = gateway.get("/loads", headers={**bearer(), "if-none-match": degraded.headers["etag"]})
    assert back.status_code == 200 and back.headers["etag"] == live.headers["etag"]


def test_a_degraded_list_has_its_own_tag_and_a_304_keeps_the_marker(gateway, upstream, bearer):
    route = upstream.get(LOADS).mock(return_value=listing())
    live = gateway.get("/loads", headers=bearer())
    route.mock(side_effect=httpx.ConnectError("down"))
    degraded = gateway.get("/loads", headers={**bearer(), "if-none-match": live.headers["etag"]})
    # same bytes as the live answer, another source: a full answer with its own tag
    assert degraded.status_code == 200 and degraded.content == live.content
    marker = DegradedMarker.parse(degraded.headers["relay-degraded"])
    assert (marker.module, marker.fallback) == ("loads", FallbackKind.LAST_KNOWN_GOOD)
    tag = degraded.headers["etag"]
    assert STRONG.match(tag) and tag != live.headers["etag"]
    assert degraded.headers["cache-control"] == "private, no-cache"
    again = gateway.get("/loads", headers={**bearer(), "if-none-match": tag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == tag
    assert DegradedMarker.parse(again.headers["relay-degraded"]).module == "loads"
    assert again.headers["age"] == degraded.headers["age"]
    assert again.headers["vary"] == "Authorization"
    # the module is back: the live answer's tag again, without the marker
    route.mock(return_value=listing())
    back = gateway.get("/loads", headers={**bearer(), "if-none-match": tag})
    assert back.status_code == 200 and "relay-degraded" not in back.headers
    assert back.headers["etag"] == live.headers["etag"]


def test_a_degraded_gate_pass_list_is_tagged_and_revalidated(gateway, upstream, bearer):
    url = "http://gatepass.test/gatepass"
    route = upstream.get(url).mock(
        return_value=httpx.Response(200, json={"items": [a_gate_pass("P-1")]})
    )
    live = gateway.get("/gatepass", headers=bearer())
    route.mock(side_effect=httpx.ConnectError("down"))
    degraded = gateway.get("/gatepass", headers=bearer())
    assert degraded.status_code == 200 and "relay-degraded" in degraded.headers
    assert degraded.headers["etag"] != live.headers["etag"]
    assert (
        degraded.headers["etag"]
        == entity_tag(
            degraded.content, b"application/json", b"module=gatepass; fallback=last-known-good"
        ).decode()
    )
    again = gateway.get(
        "/gatepass", headers={**bearer(), "if-none-match": degraded.headers["etag"]}
    )
    assert again.status_code == 304 and "relay-degraded" in again.headers


def test_writes_never_get_a_tag_nor_a_304(gateway, upstream, bearer):
    upstream.get(f"{LOADS}/L-1").mock(return_value=httpx.Response(200, json=LOAD))
    upstream.post(f"{LOADS}/L-1/events").mock(
        return_value=httpx.Response(201, json={"event": "arrived"})
    )
    read = gateway.get("/loads/L-1", headers={**bearer(), "if-none-match": '"other"'})
    assert STRONG.match(read.headers["etag"])  # the route is tagged: its reads are
    r = gateway.post(
        "/loads/L-1/events",
        json={"kind": "arrived"},
        headers={**bearer(), "if-none-match": "*"},
    )
    assert r.status_code == 201 and r.json() == {"event": "arrived"}
    assert "etag" not in r.headers and "vary" not in r.headers
    assert "cache-control" not in r.headers


def test_errors_never_get_a_tag_nor_a_304(gateway, upstream, bearer):
    upstream.get(f"{LOADS}/L-9").mock(
        return_value=httpx.Response(404, json={"title": "no such load"})
    )
    upstream.get(f"{LOADS}/L-1").mock(return_value=httpx.Response(200, json=LOAD))
    found = gateway.get("/loads/L-1", headers={**bearer(), "if-none-match": "*"})
    assert found.status_code == 304  # the same request on an answer that exists
    missing = gateway.get("/loads/L-9", headers={**bearer(), "if-none-match": "*"})
    assert missing.status_code == 404 and "etag" not in missing.headers
    assert "cache-control" not in missing.headers
    upstream.get(LOADS).mock(side_effect=httpx.ConnectError("down"))
    down = gateway.get("/loads", headers={**bearer(), "if-none-match": "*"})
    assert down.status_code == 503 and "etag" not in down.headers  # no copy: 503


def test_a_route_without_etag_is_untouched(gateway, upstream, bearer):
    upstream.get(LOADS).mock(
        return_value=httpx.Response(200, json={"items": []}, headers={"etag": '"module"'})
    )
    upstream.get("http://message.test/message").mock(
        return_value=httpx.Response(200, json={"items": []}, headers={"etag": '"module"'})
    )
    conditions = {**bearer(), "if-none-match": "*"}
    assert gateway.get("/loads", headers=conditions).status_code == 304  # opted in
    r = gateway.get("/message", headers=conditions)
    assert r.status_code == 200 and r.json() == {"items": []}
    assert r.headers["etag"] == '"module"'  # the module's, passed through as before
    assert "vary" not in r.headers and "cache-control" not in r.headers


def test_if_none_match_parsing():
    assert if_none_match_tags([]) == set()
    assert if_none_match_tags([b'"a", W/"b"', b' "c"']) == {b'"a"', b'"b"', b'"c"'}
    assert if_none_match_tags([b'"a"', b" * "]) is None
    assert if_none_match_tags([b"a, b"]) == set()  # unquoted: not entity tags


def test_tags_depend_on_body_type_and_source_only():
    body = b'{"items": []}'
    tag = entity_tag(body, b"application/json")
    assert tag == entity_tag(body, b"application/json")
    assert tag != entity_tag(body + b" ", b"application/json")
    assert tag != entity_tag(body, b"text/plain")
    assert tag != entity_tag(body, b"application/json", b"loads;last-known-good")


def _route(**extra: object) -> dict:
    return {
        "modules": {"m": {"tier": "optional", "upstream": "http://m"}},
        "routes": [{"prefix": "/m", "module": "m", **extra}],
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"roles": ["driver"], "etag": "true"}, "etag"),
        ({"roles": ["driver"], "etag": 1}, "etag"),
        ({"auth": "none", "etag": True}, "etag answers are per caller"),
    ],
)
def test_the_etag_setting_is_validated(extra, message):
    with pytest.raises(RouteTableError, match=message):
        RouteTable.from_dict(_route(**extra), env={})


def test_the_etag_setting_defaults_to_off_and_is_on_for_the_polled_lists(settings):
    from tests.unit.gateway.conftest import UPSTREAMS

    assert RouteTable.from_dict(_route(roles=["driver"]), env={}).match("/m").etag is False
    table = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    assert {r.prefix for r in table.routes if r.etag} == {"/loads", "/gatepass"}


def test_the_published_document_describes_the_conditional_gets():
    paths = json.loads(DOCUMENT.read_text())["paths"]
    for path in ("/loads", "/loads/{load_id}", "/gatepass", "/gatepass/{pass_id}"):
        op = paths[path]["get"]
        assert "If-None-Match" in {p["name"] for p in op["parameters"]}, path
        assert {"ETag", "Cache-Control", "Vary"} <= op["responses"]["200"]["headers"].keys()
        not_modified = op["responses"]["304"]
        assert "content" not in not_modified
        assert {"ETag", "Relay-Degraded"} <= not_modified["headers"].keys()
    for path, method in (("/gatepass", "post"), ("/message", "get"), ("/gatepass/keys", "get")):
        op = paths[path][method]
        assert "304" not in op["responses"], (method, path)
        assert "If-None-Match" not in {p["name"] for p in op.get("parameters", [])}


def test_roles_other_than_the_driver_get_tags_too(gateway, upstream, bearer):
    upstream.get("http://gatepass.test/gatepass").mock(
        return_value=httpx.Response(200, json={"items": []})
    )
    r = gateway.get("/gatepass", headers=bearer(Role.DISPATCH, None))
    assert r.status_code == 200 and STRONG.match(r.headers["etag"])


def test_under_lambda_a_304_has_no_body_and_keeps_the_headers(settings, upstream, bearer):
    from mangum import Mangum

    from gateway.app import create_app
    from module_kit import http
    from tests.unit.gateway.conftest import UPSTREAMS

    upstream.get(LOADS).mock(return_value=listing())
    handler = Mangum(
        create_app(settings, routes=RouteTable.load(settings.routes_file, env=UPSTREAMS)),
        lifespan="off",
        text_mime_types=http.LAMBDA_TEXT_MIME_TYPES,
    )
    events = Path(__file__).resolve().parents[3] / "events"
    template = json.loads((events / "gatepass" / "get-keys-without-identity.200.json").read_text())

    def call(**extra_headers: str) -> dict:
        event = json.loads(json.dumps(template))
        event["rawPath"] = event["requestContext"]["http"]["path"] = "/loads"
        event["headers"].update({**bearer(), **extra_headers})
        return handler(event, None)

    first = call()
    assert first["statusCode"] == 200 and STRONG.match(first["headers"]["etag"])
    again = call(**{"if-none-match": first["headers"]["etag"]})
    assert again["statusCode"] == 304 and again["body"] == ""
    assert again["headers"]["etag"] == first["headers"]["etag"]
    assert again["headers"]["cache-control"] == "private, no-cache"


def test_a_degraded_answer_keeps_its_tag_as_its_copy_ages() -> None:
    def marker(age: int | None) -> bytes:
        value = DegradedMarker(module="loads", fallback=FallbackKind.LAST_KNOWN_GOOD, age=age)
        return value.header_value().encode()

    assert source_of(marker(5)) == source_of(marker(3600)) == source_of(marker(None))
    other = DegradedMarker(module="loads", fallback=FallbackKind.STATIC, age=5)
    assert source_of(other.header_value().encode()) != source_of(marker(5))
    assert source_of(None) == b""


def test_a_degraded_answer_carrying_a_tag_gets_the_gateways_instead():
    # A fallback's answer is tagged by the gateway, with its source, whatever it carries.
    from gateway.forwarding.conditional import conditional_get
    from gateway.forwarding.forwarder import ForwardedResponse

    body = b'{"items":[]}'
    marker = b"module=loads; fallback=last-known-good; age=7"
    live_tag = entity_tag(body, b"application/json")
    answer = ForwardedResponse(
        200,
        body,
        [(b"content-type", b"application/json"), (b"etag", live_tag), (b"relay-degraded", marker)],
    )
    tagged = conditional_get("GET", [(b"if-none-match", live_tag)], answer)
    assert tagged.status_code == 200
    tags = [v for n, v in tagged.raw_headers if n == b"etag"]
    assert tags == [entity_tag(body, b"application/json", source_of(marker))] != [live_tag]
