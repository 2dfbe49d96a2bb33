"""The console's page: one server-rendered shell (Jinja2, autoescaped), its own static
script and style, and the pinned libraries installed by ``make install`` (``npm ci`` in
``console/``), all served by the control plane itself: nothing is built, nothing is
fetched from elsewhere, and the page works offline.

Every console response carries a Content-Security-Policy that allows scripts from this
origin only (no inline script, no eval), so tenant text that reached the page could not
run even if it were not escaped (it is: the templates autoescape, the script writes data
with ``textContent`` only). The admin key lives in the browser's sessionStorage and goes
out as ``Authorization: Bearer``; the page itself needs no key."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from controlplane.console.api import router as api_router
from controlplane.console.history import History, read
from controlplane.console.settings import ConsoleSettings
from controlplane.services import Services

HERE = Path(__file__).resolve().parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
# each library the page loads: URL path under /console/lib -> its folder under node_modules
LIBRARIES = {"uplot": Path("uplot") / "dist"}
VIEWS = ("overview", "instances", "tenants", "models", "decisions")

_templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                         autoescape=select_autoescape(default=True, default_for_string=True))

router = APIRouter(include_in_schema=False)


class _Files(StaticFiles):
    """Static files with the console's headers."""

    def file_response(self, *args: Any, **kwargs: Any) -> Any:
        response = super().file_response(*args, **kwargs)
        response.headers.update(HEADERS)
        return response

    async def get_response(self, path: str, scope: Scope) -> Any:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


@router.get("/console")
async def console(request: Request) -> HTMLResponse:
    services: Services = request.app.state.services
    libs: Path = request.app.state.console_settings.libs_dir
    missing = [name for name, folder in LIBRARIES.items() if not (libs / folder).is_dir()]
    html = _templates.get_template("console.html").render(
        replica=services.settings.replica_id, views=VIEWS, missing=missing)
    return HTMLResponse(html, headers={**HEADERS, "Cache-Control": "no-store"})


@router.get("/console/")
async def console_slash() -> RedirectResponse:
    return RedirectResponse("/console", status_code=308)


class _Libraries:
    """The pinned libraries, found where the lifespan's settings say (``libs_dir``)."""

    def __init__(self) -> None:
        self._files: dict[str, _Files] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        name, _, rest = scope["path"].removeprefix(scope.get("root_path", "")).lstrip("/").partition("/")
        folder = LIBRARIES.get(name)
        if folder is None:
            raise HTTPException(404, f"no console library {name!r}")
        files = self._files.get(name)
        if files is None:
            libs: Path = scope["app"].state.console_settings.libs_dir
            # check_dir=False: without `make install` the page says what to run instead
            files = self._files[name] = _Files(directory=libs / folder, check_dir=False)
        await files({**scope, "path": "/" + rest, "root_path": ""}, receive, send)


def mount(app: FastAPI) -> None:
    """The page, its assets and its read endpoints."""
    app.include_router(router)
    app.include_router(api_router)
    app.mount("/console/static", _Files(directory=HERE / "static"), name="console-static")
    app.mount("/console/lib", _Libraries(), name="console-lib")


@contextlib.asynccontextmanager
async def running(app: FastAPI, services: Services,
                  settings: ConsoleSettings | None = None) -> AsyncIterator[History]:
    """The history sampler for the app's lifespan: started with it, stopped with it."""
    settings = settings or ConsoleSettings()
    app.state.console_settings = settings
    history = History(lambda: read(services), interval_s=settings.sample_interval_s, window_s=settings.window_s)
    app.state.console_history = history
    history.start()
    try:
        yield history
    finally:
        await history.close()
