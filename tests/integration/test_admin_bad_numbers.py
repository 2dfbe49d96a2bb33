"""Careless operator input on the admin API: NaN and infinity in tenant quotas or key
lifetimes are refused (JSON stores them as null, so a record holding one broke every later
read of it, and a NaN lifetime made a key that never expires)."""

from __future__ import annotations

import httpx
import pytest

from tests.support.cp_app import ADMIN_KEY, RunningApp


async def _post_json(cp: RunningApp, path: str, text: str) -> httpx.Response:
    return await cp.client.post(path, content=text, headers={
        **cp.headers(ADMIN_KEY), "Content-Type": "application/json"})


# Python's json writes and reads the NaN / Infinity tokens; that is what a careless client sends
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_quota_is_refused_and_tenant_listing_keeps_working(cp: RunningApp, value: str) -> None:
    r = await _post_json(cp, "/admin/tenants", f'{{"name": "acme", "quotas": {{"rps": {value}}}}}')
    assert r.status_code == 400, r.text
    assert "must be finite numbers" in r.json()["error"]
    r = await cp.admin("GET", "/admin/tenants")
    assert r.status_code == 200 and r.json() == {"tenants": []}


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
async def test_non_finite_key_lifetime_is_refused(cp: RunningApp, value: str) -> None:
    assert (await cp.admin("POST", "/admin/tenants", json={"name": "acme"})).status_code == 201
    r = await _post_json(cp, "/admin/tenants/acme/keys", f'{{"expires_in_s": {value}}}')
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("expires_in_s must be a finite number > 0")
    assert (await cp.admin("GET", "/admin/tenants/acme/keys")).json() == {"keys": []}


async def test_service_refuses_a_nan_lifetime_from_any_caller(cp: RunningApp) -> None:
    from kserve.errors import InvalidArgument

    await cp.services.tenants.create_tenant("acme")
    with pytest.raises(InvalidArgument, match="finite"):
        await cp.services.tenants.issue_key("tenant", "acme", float("nan"))
    with pytest.raises(InvalidArgument, match="finite"):
        await cp.services.tenants.create_tenant("globex", quotas={"rps": float("inf")})


async def test_a_body_that_fails_validation_is_a_400_naming_the_field_even_with_nan(cp: RunningApp) -> None:
    # FastAPI's default 422 echoes the input, and cannot encode a NaN: it answered 500
    r = await _post_json(cp, "/admin/instances", '{"http_url": "h:1", "grpc_url": "h:2", "memory_bytes": NaN}')
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("invalid request: body.memory_bytes: ")
    r = await cp.client.get("/v2/models/m/profile", params={"version": "abc"}, headers=cp.headers(ADMIN_KEY))
    assert r.status_code == 400 and r.json()["error"].startswith("invalid request: query.version: ")
