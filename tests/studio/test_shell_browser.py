"""The page shell in a real browser: the navigation renders and the shared script loads without errors."""
from __future__ import annotations

from vlmdpo.studio.page import NAV


def test_shell_serves_its_assets(live_studio, page):
    response = page.goto(live_studio.url + "/static/studio.css")
    assert response.status == 200
    page.goto(live_studio.url + "/static/studio.js")
    assert "studio" in page.content()
    assert [path for path, _ in NAV][0] == "/data"
