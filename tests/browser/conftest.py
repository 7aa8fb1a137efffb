"""A real headless browser for the dashboard tests: Debian's chromium (installed by .ci/run, as
mosquitto is), driven by Playwright with the system browser's path: nothing is downloaded at test time.
Screenshots go to build/test-artifacts/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts"
# Without the background-networking flags chromium keeps trying to reach Google's hosts, which a closed
# network refuses; as root it needs --no-sandbox.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("the dashboard tests need Debian's chromium: sudo apt-get install chromium")
    return found


@pytest.fixture
def browser() -> Iterator[Browser]:
    """One browser per test: Playwright's sync API runs an event loop of its own in this thread while it
    is open, which the asyncio tests that may follow on the same worker must not find running."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
