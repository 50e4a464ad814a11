"""The studio's FastAPI app: one router per page module, the token gate, static files and the error shape.

Adding a page: write `studio/<page>.py` with `router = APIRouter()` (its HTML at GET /<page>, its JSON under
/api/<page>/...), and list the module in PAGES.
"""
from __future__ import annotations

import hmac
from importlib import import_module
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from vlmdpo.studio.errors import StudioError
from vlmdpo.studio.home import StudioHome

PAGES: tuple[str, ...] = (  # module names under vlmdpo.studio, in NAV order
    "data",
    "train",
    "monitor",
    "lab",
    "label",
    "deploy",
)
STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "vlmdpo_studio_token"


def get_home(request: Request) -> StudioHome:
    """FastAPI dependency: the home folder this app serves."""
    return request.app.state.home


def create_app(home: StudioHome, *, token: str | None = None) -> FastAPI:
    app = FastAPI(title="vlmdpo studio", docs_url=None, redoc_url=None)
    app.state.home, app.state.token = home, token

    @app.exception_handler(StudioError)
    async def _studio_error(request: Request, exc: StudioError) -> JSONResponse:
        return JSONResponse(exc.payload(), status_code=exc.status)

    if token:
        @app.middleware("http")
        async def _token_gate(request: Request, call_next):
            given = (request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
                     or request.headers.get("authorization", "").removeprefix("Bearer ").strip())
            if not hmac.compare_digest(given.encode(), token.encode()):
                err = StudioError("this studio needs its token", "open the URL the studio printed (it carries ?token=)",
                                  field="token", status=401)
                return JSONResponse(err.payload(), status_code=401)
            response = await call_next(request)
            if request.query_params.get("token"):  # the printed URL: remember it for the page's later requests
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def _index() -> RedirectResponse:
        return RedirectResponse("/data")

    for name in PAGES:
        app.include_router(import_module(f"vlmdpo.studio.{name}").router)
    return app
