"""Game day: navigate is black-holed (accepts, never answers). Loads must not notice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.identity import Role

NAVIGATE = {"load_id": "L-5001", "lat": 41.88, "lon": -87.63}


def test_navigate_black_hole_is_isolated_and_answered_statically(api, stack):
    driver, ops = api.auth(Role.DRIVER, "D-1001"), api.auth(Role.OPS, None)
    # GIVEN the app has the driver's loads and one live navigation answer
    assert api.http.get("/loads", headers=driver).status_code == 200
    live = api.http.get("/navigate", params=NAVIGATE, headers=driver)
    assert live.status_code == 200 and "relay-degraded" not in live.headers

    # WHEN navigate is black-holed for this game day (self-expiring)
    r = api.http.put(
        "/ops/faults/navigate",
        json={"kind": "blackhole", "ttl_seconds": 120, "reason": "integration game day"},
        headers=ops,
    )
    assert r.status_code == 200

    def navigate() -> httpx.Response:
        with httpx.Client(base_url=stack.gateway_url, timeout=10) as c:
            return c.get("/navigate", params=NAVIGATE, headers=driver)

    with ThreadPoolExecutor(max_workers=4) as pool:
        pending = [pool.submit(navigate) for _ in range(8)]
        # ... while loads is polled at the same time
        loads = [api.http.get("/loads", headers=driver) for _ in range(30)]
        answers = [f.result() for f in pending]

    # THEN loads is untouched: all live, all successful, never waiting on navigate
    assert all(r.status_code == 200 and "relay-degraded" not in r.headers for r in loads)
    assert max(r.elapsed.total_seconds() for r in loads) < 1.5  # navigate's deadline
    # AND navigate answers with static directions, marked as such
    for r in answers:
        assert r.status_code == 200
        assert DegradedMarker.parse(r.headers["relay-degraded"]).fallback is FallbackKind.STATIC
        assert r.json()["destination"]["facility_id"] == "F-CHI"
    status = api.http.get("/ops/status", headers=ops).json()["modules"]["navigate"]
    assert status["breaker"]["state"] == "open"

    # AND once open, the breaker answers without trying the black hole
    before = api.http.get("/ops/status", headers=ops).json()["fallbacks_served"]["navigate:static"]
    fast = api.http.get("/navigate", params=NAVIGATE, headers=driver)
    assert fast.status_code == 200 and fast.json()["engine"] == "gateway-static"
    after = api.http.get("/ops/status", headers=ops).json()
    assert after["fallbacks_served"]["navigate:static"] == before + 1
    assert after["modules"]["navigate"]["breaker"]["state"] == "open"

    assert api.http.delete("/ops/faults/navigate", headers=ops).status_code == 204
