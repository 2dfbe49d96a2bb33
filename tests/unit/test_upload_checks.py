"""The upload route refuses bad options before the (slow) model probe, and labels refusals
with a model name only when the name is a valid one (real services on an embedded store,
the app over ASGI without its lifespan: no gRPC server, no workers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import controlplane.routes.models as model_routes
from controlplane.app import create_app, served
from controlplane.catalog import MAX_VERSION
from controlplane.gateway import UNKNOWN_MODEL_LABEL
from controlplane.services import Services, build_services, close_services
from controlplane.settings import Settings

ADMIN = "ipx_upload-checks-admin"


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    svc = await build_services(Settings(data_dir=tmp_path, bootstrap_admin_key=ADMIN, profile_on_upload=False))
    try:
        yield svc
    finally:
        await close_services(svc)


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services.settings, services)
    app.state.services = services  # what the lifespan would set
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served(app)), base_url="http://cp",
                                 headers={"Authorization": f"Bearer {ADMIN}"}) as c:
        assert (await c.post("/admin/tenants", json={"name": "acme"})).status_code == 201
        yield c


@pytest.fixture
def probes(monkeypatch) -> list[Path]:
    """The model probe, replaced: records each call and refuses the file."""
    calls: list[Path] = []

    async def probe(path: Path, **_: object) -> None:
        calls.append(path)
        raise model_routes.InvalidArgument("probed")

    monkeypatch.setattr(model_routes, "validate_model", probe)
    return calls


@pytest.mark.parametrize(("option", "value", "error"), [
    ("version", "0", f"version must be between 1 and {MAX_VERSION}, got 0"),
    ("version", "x", "version must be an integer, got 'x'"),
    ("slo_ms", "-5", "slo_ms must be a finite number > 0, got -5.0"),
    ("slo_ms", "nan", "slo_ms must be a number of milliseconds, got 'nan'"),
])
async def test_bad_version_or_slo_is_refused_before_the_model_is_probed(
        client: httpx.AsyncClient, probes: list[Path], option: str, value: str, error: str) -> None:
    r = await client.post("/v1/models", params={"tenant": "acme", "name": "m", option: value}, content=b"x")
    assert (r.status_code, r.json()["error"]) == (400, error)
    assert probes == []
    r = await client.post("/v1/models", params={"tenant": "acme", "name": "m"}, content=b"x")
    assert (r.status_code, r.json()["error"]) == (400, "probed")
    assert len(probes) == 1


async def test_refused_uploads_with_a_bad_name_share_one_metric_label(
        client: httpx.AsyncClient, services: Services, probes: list[Path]) -> None:
    for name in ("../etc", "x" * 200, "a..b"):
        r = await client.post("/v1/models?tenant=acme", files={"file": ("m.onnx", b"x"), "name": (None, name)})
        assert r.status_code == 400 and "invalid model name" in r.json()["error"], r.text
    r = await client.post("/v1/models?tenant=acme", files={"file": ("m.onnx", b"x")})
    assert r.status_code == 400 and r.json()["error"].startswith("missing model name")
    r = await client.post("/v1/models?tenant=acme", files={"file": ("m.onnx", b"x"), "name": (None, "good")})
    assert r.status_code == 400
    count = services.metrics.counter_value
    assert count("inferplex_errors_total", tenant="acme", kind="upload_refused") == 5
    assert count("inferplex_errors_total", tenant="acme", model=UNKNOWN_MODEL_LABEL, kind="upload_refused") == 4
    assert count("inferplex_errors_total", tenant="acme", model="good", kind="upload_refused") == 1
