"""Admin REST for tenants and keys, and authentication, against the real app and store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.support.cp_app import ADMIN_KEY, RunningApp, running_app, settings_for


async def test_tenant_crud_and_duplicate_is_409(cp: RunningApp) -> None:
    r = await cp.admin("POST", "/admin/tenants", json={"name": "acme", "display_name": "Acme"})
    assert r.status_code == 201 and r.json()["name"] == "acme"
    r = await cp.admin("POST", "/admin/tenants", json={"name": "acme"})
    assert r.status_code == 409 and r.json() == {"error": "tenant 'acme' already exists"}
    r = await cp.admin("GET", "/admin/tenants")
    assert [t["name"] for t in r.json()["tenants"]] == ["acme"]
    r = await cp.admin("GET", "/admin/tenants/acme")
    assert r.json()["display_name"] == "Acme" and r.json()["models"] == []
    assert (await cp.admin("DELETE", "/admin/tenants/acme")).status_code == 200
    r = await cp.admin("GET", "/admin/tenants/acme")
    assert r.status_code == 404 and "unknown tenant 'acme'" in r.json()["error"]


async def test_bad_tenant_name_says_what_is_allowed(cp: RunningApp) -> None:
    r = await cp.admin("POST", "/admin/tenants", json={"name": "Bad_Name"})
    assert r.status_code == 400 and "lowercase letters, digits and '-'" in r.json()["error"]


async def test_two_racing_creates_one_wins(cp: RunningApp) -> None:
    results = await asyncio.gather(*(cp.admin("POST", "/admin/tenants", json={"name": "race"}) for _ in range(4)))
    assert sorted(r.status_code for r in results) == [201, 409, 409, 409]


async def test_missing_unknown_revoked_and_expired_keys_are_401(cp: RunningApp) -> None:
    key = await cp.tenant_with_key("acme")
    assert (await cp.client.get("/v1/models", headers=cp.headers(key))).status_code == 200
    r = await cp.client.get("/v1/models")
    assert r.status_code == 401
    assert r.json() == {"error": "missing API key: send 'Authorization: Bearer <key>'"}
    r = await cp.client.get("/v1/models", headers=cp.headers("ipx_not-a-key"))
    assert r.status_code == 401 and r.json() == {"error": "unknown or revoked API key"}
    # the bare key (no "Bearer") works too
    assert (await cp.client.get("/v1/models", headers={"Authorization": key})).status_code == 200

    keys = (await cp.admin("GET", "/admin/tenants/acme/keys")).json()["keys"]
    assert len(keys) == 1 and "key" not in keys[0]  # ids only, never the secret
    r = await cp.admin("DELETE", f"/admin/keys/{keys[0]['key_id']}")
    assert r.status_code == 200 and r.json()["revoked"] is True
    r = await cp.client.get("/v1/models", headers=cp.headers(key))
    assert r.status_code == 401 and r.json() == {"error": "unknown or revoked API key"}

    r = await cp.admin("POST", "/admin/tenants/acme/keys", json={"expires_in_s": 0.3})
    short = r.json()["key"]
    deadline = r.json()["expires_at"]
    assert (await cp.client.get("/v1/models", headers=cp.headers(short))).status_code == 200
    # expiry is a wall-clock time, not an event to synchronise on: wait until it has passed
    await asyncio.sleep(max(0.0, deadline - time.time()) + 0.05)
    r = await cp.client.get("/v1/models", headers=cp.headers(short))
    assert r.status_code == 401 and r.json() == {"error": "API key expired"}


async def test_tenant_key_on_admin_route_is_403(cp: RunningApp) -> None:
    key = await cp.tenant_with_key("acme")
    r = await cp.client.get("/admin/tenants", headers=cp.headers(key))
    assert r.status_code == 403 and r.json() == {"error": "this operation needs an admin key"}
    r = await cp.client.post("/admin/keys", headers=cp.headers(key), json={})
    assert r.status_code == 403


async def test_extra_admin_key_works_and_unknown_revoke_is_404(cp: RunningApp) -> None:
    r = await cp.admin("POST", "/admin/keys", json={})
    assert r.status_code == 201 and r.json()["role"] == "admin"
    second = r.json()["key"]
    assert (await cp.client.get("/admin/tenants", headers=cp.headers(second))).status_code == 200
    r = await cp.admin("DELETE", "/admin/keys/key_nope")
    assert r.status_code == 404 and "unknown API key id 'key_nope'" in r.json()["error"]


async def test_deleting_a_tenant_deletes_its_keys(cp: RunningApp) -> None:
    key = await cp.tenant_with_key("acme")
    assert (await cp.admin("DELETE", "/admin/tenants/acme")).status_code == 200
    r = await cp.client.get("/v1/models", headers=cp.headers(key))
    assert r.status_code == 401


async def test_key_for_unknown_tenant_is_404(cp: RunningApp) -> None:
    r = await cp.admin("POST", "/admin/tenants/ghost/keys", json={})
    assert r.status_code == 404


async def test_restart_keeps_tenants_and_keys_and_admin_key_is_made_once(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data", bootstrap_admin_key=None)
    async with running_app(settings) as cp:
        first_admin = cp.services.new_admin_key
        assert first_admin and first_admin.startswith("ipx_")
        r = await cp.client.post("/admin/tenants", json={"name": "acme"}, headers=cp.headers(first_admin))
        assert r.status_code == 201
        r = await cp.client.post("/admin/tenants/acme/keys", json={}, headers=cp.headers(first_admin))
        key = r.json()["key"]
    async with running_app(settings_for(tmp_path / "data", bootstrap_admin_key=ADMIN_KEY)) as cp:
        assert cp.services.new_admin_key is None
        r = await cp.client.get("/admin/tenants", headers=cp.headers(first_admin))
        assert [t["name"] for t in r.json()["tenants"]] == ["acme"]
        assert (await cp.client.get("/v1/models", headers=cp.headers(key))).status_code == 200
        # the bootstrap setting is ignored once an admin key exists
        assert (await cp.client.get("/admin/tenants", headers=cp.headers(ADMIN_KEY))).status_code == 401
