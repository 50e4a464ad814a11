"""Studio fixtures: a home folder, a live server on a free port (uvicorn in a thread), and a real
headless Chromium page (Playwright driving the system's Chromium, which `make test` installs).

Screenshots go to test-artifacts/studio/<name>.png (`shot(page, name)`); the README's are copied from there.
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from vlmdpo.net import free_port
from vlmdpo.studio.app import create_app
from vlmdpo.studio.home import StudioHome

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "studio"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture
def studio_home(tmp_path) -> StudioHome:
    return StudioHome(tmp_path / "studio", extra_roots=(tmp_path,))


@pytest.fixture
def client(studio_home):
    """The app in-process (httpx); afterwards every run and server the test started is stopped."""
    from fastapi.testclient import TestClient
    from studio_helpers import stop_all

    yield TestClient(create_app(studio_home))
    stop_all(studio_home)


class LiveStudio:
    def __init__(self, home: StudioHome, token: str | None = None):
        self.port = free_port()
        self.home, self.url = home, f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(home, token=token), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveStudio":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the studio server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_studio(studio_home):
    with LiveStudio(studio_home) as live:
        yield live


# Module scope, not session: Playwright's sync API keeps an asyncio loop running while it is open, and a
# later test file that calls asyncio.run (tests/serve) fails under it.
@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "no system Chromium: `make test` installs Debian's chromium package (make browser)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished one-step LoRA run of tiny:idefics3 (trained once per session; copy it into a test's roots)."""
    from run_helpers import one_step_run

    return one_step_run(tmp_path_factory.mktemp("tiny-run") / "run", save_steps=10)
