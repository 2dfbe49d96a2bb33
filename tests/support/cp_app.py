"""The real control-plane app in-process, for REST-level tests: a real EmbeddedStore
under a temp data dir, the real lifespan (services, gRPC gateway on a free port),
and an ``httpx.AsyncClient`` talking ASGI to it. No workers: REST tests need none."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from controlplane.app import create_app, served
from controlplane.settings import Settings
from tests.support.models import TEST_SLO_MS
from tests.support.procs import eventually, free_port

ADMIN_KEY = "ipx_test-admin-key"


@dataclass
class RunningApp:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    @property
    def services(self) -> Any:
        return self.app.state.services

    def headers(self, key: str | None) -> dict[str, str]:
        return {} if key is None else {"Authorization": f"Bearer {key}"}

    async def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, path, headers=self.headers(ADMIN_KEY), **kwargs)

    async def tenant_with_key(self, tenant: str) -> str:
        r = await self.admin("POST", "/admin/tenants", json={"name": tenant})
        assert r.status_code == 201, r.text
        r = await self.admin("POST", f"/admin/tenants/{tenant}/keys", json={})
        assert r.status_code == 201, r.text
        return r.json()["key"]


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        data_dir=data_dir, http_port=free_port(), grpc_port=free_port(),
        bootstrap_admin_key=ADMIN_KEY, profile_on_upload=False,
    )
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[RunningApp]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=served(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            yield RunningApp(app, client, settings)


async def upload_raw(cp: RunningApp, key: str, data: bytes, **params: Any) -> httpx.Response:
    params.setdefault("slo_ms", TEST_SLO_MS)
    return await cp.client.post("/v1/models", content=data, params=params,
                                headers={**cp.headers(key), "Content-Type": "application/octet-stream"})


async def upload_multipart(cp: RunningApp, key: str, data: bytes, filename: str = "model.bin",
                           **fields: Any) -> httpx.Response:
    fields.setdefault("slo_ms", TEST_SLO_MS)
    return await cp.client.post("/v1/models", files={"file": (filename, data)},
                                data={k: str(v) for k, v in fields.items()}, headers=cp.headers(key))


def blobs(cp: RunningApp) -> list[Path]:
    return sorted(p for p in (cp.settings.artifacts_path / "sha256").rglob("*") if p.is_file())


def leftovers(cp: RunningApp) -> list[Path]:
    return list((cp.settings.artifacts_path / "tmp").iterdir())


async def wait_status(cp: RunningApp, key: str, name: str, status: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """Poll describe until the latest version has ``status`` (set by a background task)."""
    body: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal body
        body = (await cp.client.get(f"/v1/models/{name}", headers=cp.headers(key))).json()
        return body["versions"][-1]["status"] == status

    await eventually(reached, timeout_s, f"model {name}'s latest version to be {status}")
    return body
