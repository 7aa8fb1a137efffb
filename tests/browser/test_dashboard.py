"""The dashboard in a real headless browser, against `edgehub-emu run` with the example deployment and
its sample modules (real SDK processes) sending: the page shows every module and route, live counts
that grow, invokes a method, edits a desired property and injects a message that is then seen arriving."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from edgehub_emu.testing import HubProcess

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "127.0.0.86"  # the SDK modules dial 8883: this test's hub has an address of its own

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def example_hub(tmp_path: Path) -> Iterator[HubProcess]:
    hub = HubProcess(
        tmp_path,
        "-m",
        str(ROOT / "config" / "deployment.json"),
        "--local-modules",
        str(ROOT / "config" / "local-modules.json"),
        "--host",
        ADDRESS,
        "--mqtts-port",
        "8883",
        "--amqps-port",
        "5671",
        "--https-port",
        "443",
        "--no-watch",
    )
    yield hub
    hub.stop()


@pytest.fixture
def page(browser: Browser, example_hub: HubProcess) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    banner = "".join(example_hub.banner)
    url = re.search(r"dashboard\s+(http://\S+)", banner)
    assert url is not None, banner  # the banner prints where the dashboard is
    opened.goto(url.group(1))
    yield opened
    context.close()


def routed(page: Page, route: str) -> int:
    text = page.locator(f'g.edge[data-route="{route}"] text.count').text_content() or ""
    found = re.match(r"(\d+) routed", text)
    return int(found.group(1)) if found else -1


def test_the_dashboard_shows_the_example_pipeline_live(page: Page, artifacts: Path):
    expect(page.locator("#live")).to_have_text("live")
    graph = page.locator("#graph svg")
    for name in ("SimulatedTemperatureSensor", "filtermodule", "$upstream"):
        expect(graph.locator(f'g.node[data-node="{name}"]')).to_be_visible()
    for route in ("sensorToFilter", "filterToIoTHub"):
        expect(graph.locator(f'g.edge[data-route="{route}"] text').first).to_have_text(route)
    for module in ("SimulatedTemperatureSensor", "filtermodule"):
        row = page.locator(f'#module-rows tr[data-module="{module}"]')
        expect(row).to_contain_text("connected over mqtt")
        expect(row).to_contain_text("running")  # started by the local module runner

    count = """() => parseInt(document.querySelector('g.edge[data-route="sensorToFilter"] text.count')
        .textContent)"""
    page.wait_for_function(f"({count})() > 0")  # the sensor sends every 0.5 s: the route counts grow
    first = routed(page, "sensorToFilter")
    page.wait_for_function(f"({count})() > {first}")
    assert routed(page, "sensorToFilter") > first
    expect(page.locator("#message-list li").first).to_contain_text("machine")
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)


def test_a_method_a_desired_property_and_an_injected_message_from_the_page(page: Page, artifacts: Path):
    expect(page.locator("#live")).to_have_text("live")
    page.locator('#module-rows tr[data-module="SimulatedTemperatureSensor"] button').click()
    page.fill("#method-name", "reset")
    page.fill("#method-payload", "{}")
    page.click("#method-form button")
    expect(page.locator("#method-result")).to_contain_text('"status": 200')

    page.fill("#desired", json.dumps({"SendInterval": 0.5, "fromThePage": True}))
    page.click("#desired-form button")
    expect(page.locator("#twin")).to_contain_text('"fromThePage": true')

    page.click("#inject summary")
    page.select_option("#inject-module", "filtermodule")
    page.fill("#inject-input", "input1")
    page.fill("#inject-body", json.dumps({"machine": {"temperature": 987.5}, "from": "the dashboard"}))
    page.click("#inject-form button")
    expect(page.locator("#inject-result")).to_have_text("queued for edge-device/filtermodule/input1")
    # filtermodule passes it on as an alert: it is seen arriving at $upstream
    page.fill("#filter", "987.5")
    arrived = page.locator("#message-list li", has_text="from edge-device/filtermodule")
    expect(arrived.first).to_contain_text("$upstream")
    injected = page.locator("#message-list li", has_text="from api")
    expect(injected).to_contain_text("edge-device/filtermodule/input1")
    injected.locator("details.trace summary").click()  # where did it go? delivered to filtermodule
    expect(injected.locator(".trace-text")).to_contain_text(
        "queued for edge-device/filtermodule/input1, priority 0"
    )
    expect(injected.locator(".trace-text")).to_contain_text(": delivered")
    page.screenshot(path=str(artifacts / "dashboard-actions.png"), full_page=True)
