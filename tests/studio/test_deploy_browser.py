"""Export & deploy in Chromium: export the tiny run merged (its own process), serve the export, run the
page's Python snippet against it, find the server again from a restarted studio, and stop it."""
from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import shot
from fastapi.testclient import TestClient

from studio_helpers import IMAGES, add_run

from vlmdpo.studio import processes, servers
from vlmdpo.studio.app import create_app
from vlmdpo.studio.home import StudioHome


def test_export_serve_snippet_restart_stop(live_studio, page, tmp_path, tiny_run):
    home = live_studio.home
    run = add_run(home, tiny_run, tmp_path / "run")
    try:
        page.goto(live_studio.url + "/deploy")
        page.select_option("#export-form select[name=run]", str(run))
        assert page.input_value("#export-form input[name=source]") == str(run)
        page.click("#export-form button[type=submit]")
        page.locator("#exports .status.finished").wait_for(timeout=120_000)
        exported = home.root / "exports" / "run-merged"
        assert (exported / "model.safetensors").is_file() and not (exported / "adapter_config.json").exists()

        assert page.input_value("#serve-form input[name=source]") == str(exported)
        page.fill("#serve-form input[name=name]", "tiny-dpo")
        page.click("#serve-form button[type=submit]")
        card = page.locator(".server").first
        card.locator(".status.running").wait_for(timeout=120_000)
        snippet = card.locator("pre.python").inner_text()
        server = servers.servers(home, "deploy")[0]
        assert 'model="tiny-dpo"' in snippet and f"127.0.0.1:{server['port']}/v1" in snippet
        assert f"port {server['port']}" in card.inner_text()
        shot(page, "deploy")

        shutil.copy(IMAGES / "red_square.png", tmp_path / "photo.png")  # the snippet, as a user runs it
        ran = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr  # (random weights: the answer itself may be empty)
        curl = subprocess.run(["bash", "-c", card.locator("pre.curl").inner_text()], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert '"choices"' in curl.stdout, curl.stdout + curl.stderr

        restarted = TestClient(create_app(StudioHome(home.root, extra_roots=home.extra_roots)))
        found = restarted.get("/api/deploy/state").json()["servers"]
        assert [(s["id"], s["pid"], s["status"]) for s in found] == [(server["id"], server["pid"], "running")]

        card.locator("button", has_text="Stop").click()
        card.locator(".status.stopped").wait_for()
        assert not processes.alive(server["pid"])
    finally:
        for row in servers.servers(home, "deploy"):
            processes.stop(row["pid"])
