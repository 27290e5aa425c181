"""The operators' dashboard in a real browser (Debian's Chromium, headless, through
Playwright) against a real local stack with its console: the token gate, the modules and
their breakers, a fault opening loads' breaker as drivers keep polling, a lever pulled and
released from the page. On failure the page's screenshot is kept in
``.relay/artifacts/dashboard-<test>.png`` (the failure message names it)."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.cloud import ROOT
from relay.stack import LocalStack, free_port
from shared_contracts.identity import Role
from tests.integration.conftest import Api, wait_until

playwright_sync = pytest.importorskip("playwright.sync_api")
Page, expect = playwright_sync.Page, playwright_sync.expect

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium's own connections (updates, sync) are
# refused on a closed network, and it stalls on them.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / ".relay" / "artifacts"
REFRESHES = 4  # the page refreshes every 2 s: what it shows must appear within a few
SHOWN_WITHIN_MS = REFRESHES * 2000 + 1000
expect.set_options(timeout=SHOWN_WITHIN_MS)  # expect's own default (5 s) is not the page's

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
    reason="Chromium is not installed (make test-integration installs it from Debian's packages)",
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The module's stack, with the console relay dev runs beside the gateway."""
    with LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path_factory.mktemp("relay"),
        event_source_backoff=(1, 2),
        console=True,
    ) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_sync.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, stack: LocalStack) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage) on the dashboard."""
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(SHOWN_WITHIN_MS)
    tab.goto(stack.console_url)
    yield tab
    context.close()


@pytest.fixture
def kept_on_failure(page: Page, request: pytest.FixtureRequest):
    """``with kept_on_failure:`` a failure keeps the page's screenshot and names it."""

    @contextlib.contextmanager
    def watch() -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            shot = ARTIFACTS / f"dashboard-{request.node.name}.png"
            try:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot), full_page=True)
                where = f"the dashboard's screenshot is kept in {shot}"
            except Exception as failed:
                where = f"no screenshot could be taken ({failed!r})"
            raise AssertionError(f"{exc}\n{where}") from exc

    return watch()


def sign_in(page: Page, token: str) -> None:
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def ops_token(api: Api) -> str:
    return api.auth(Role.OPS, None)["authorization"].removeprefix("Bearer ")


def breaker(page: Page, unit: str):
    return page.locator(f'#modules tr[data-unit="{unit}"] .breaker')


def test_the_page_asks_for_a_token_and_refuses_one_without_the_ops_role(
    page: Page, api: Api, kept_on_failure
):
    with kept_on_failure:
        # GIVEN the page opened with no token: it asks for one and shows nothing else
        expect(page.locator("#login")).to_be_visible()
        expect(page.locator("#dashboard")).to_be_hidden()
        # WHEN a driver's token is pasted
        driver = api.auth(Role.DRIVER, "D-1001")["authorization"].removeprefix("Bearer ")
        sign_in(page, driver)
        # THEN the gateway refuses it, the page says so and keeps nothing
        expect(page.locator("#login-error")).to_contain_text("refuse")
        expect(page.locator("#dashboard")).to_be_hidden()
        assert page.evaluate("sessionStorage.length") == 0


def test_loads_breaker_shown_open_after_a_fault_and_driver_requests(
    page: Page, api: Api, kept_on_failure
):
    driver, ops = api.auth(Role.DRIVER, "D-1001"), api.auth(Role.OPS, None)
    with kept_on_failure:
        # GIVEN the operator signed in with an ops token
        sign_in(page, ops_token(api))
        # THEN every module is listed with its breaker closed
        for unit in ("loads", "gatepass", "navigate", "message"):
            expect(breaker(page, unit)).to_have_attribute("data-state", "closed")
        expect(page.locator("#faults li.none")).to_be_visible()
        # AND the critical input/output pairs from the EMF lines in the logs (relay.emf):
        # the demo data's assignments, created as the stack was seeded
        created = page.locator('#io [data-metric="relay_loads_assignments_created_total"] b')
        expect(created).to_have_text(re.compile(r"^[1-9]\d*$"))
        # AND live answers first (and a last-known-good copy for later). On a busy host the
        # stack's first calls to loads may miss their deadline and be served degraded: the
        # test waits for three live ones rather than taking any 200 for live.
        live = 0

        def answered_live() -> bool:
            nonlocal live
            r = api.http.get("/loads", headers=driver)
            live += r.status_code == 200 and "relay-degraded" not in r.headers
            return live >= 3

        assert wait_until(answered_live, timeout=30), "loads never answered live"
        chart = page.locator('figure.chart[data-unit="loads"]')
        expect(chart.locator("path.live")).to_have_count(1)  # charted at the next poll

        # WHEN loads answers every call with an error (self-expiring) and drivers keep polling
        fault = {"kind": "error", "error_rate": 1.0, "ttl_seconds": 60, "reason": "dashboard test"}
        assert api.http.put("/ops/faults/loads", json=fault, headers=ops).status_code == 200
        try:
            for _ in range(8):
                api.http.get("/loads", headers=driver)
            # THEN within a few refreshes the page shows loads' breaker open, the others closed
            expect(breaker(page, "loads")).to_have_attribute("data-state", "open")
            expect(breaker(page, "gatepass")).to_have_attribute("data-state", "closed")
            # AND the fault, with its reason
            expect(page.locator('#faults li[data-fault="loads"]')).to_contain_text("dashboard test")
            # AND loads' chart has the degraded or failed answers beside the live ones
            expect(chart.locator("path.live")).to_have_count(1)
            expect(chart.locator("path.degraded, path.failed").first).to_be_visible()
            expect(chart.locator("rect.band.open").first).to_be_visible()  # open, over time
        finally:
            assert api.http.delete("/ops/faults/loads", headers=ops).status_code == 204


def test_a_lever_pulled_from_the_form_is_listed_and_released_from_the_page(
    page: Page, api: Api, kept_on_failure
):
    ops = api.auth(Role.OPS, None)
    with kept_on_failure:
        sign_in(page, ops_token(api))
        expect(page.locator("#levers li.none")).to_contain_text("No lever pulled")
        # WHEN the operator sheds the optional tier from the form
        page.select_option("#lever-type", "shed")
        page.fill("#lever-target", "optional")
        page.fill("#lever-reason", "dashboard test: shed optional")
        page.fill("#lever-ttl", "120")
        page.click("#lever-pull")
        # THEN it is listed, with why, and the gateway holds it
        lever = page.locator('#levers li[data-lever-id="shed:optional"]')
        expect(lever).to_contain_text("dashboard test: shed optional")
        expect(page.locator("#lever-error")).to_be_empty()
        held = api.http.get("/ops/levers", headers=ops).json()["levers"]
        assert [lv["lever_id"] for lv in held] == ["shed:optional"]
        # WHEN it is released from the page
        lever.locator("button.release").click()
        # THEN it is gone, from the page and from the gateway
        expect(lever).to_have_count(0)
        expect(page.locator("#levers li.none")).to_be_visible()
        assert api.http.get("/ops/levers", headers=ops).json()["levers"] == []
