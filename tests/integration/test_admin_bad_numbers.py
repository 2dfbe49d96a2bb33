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


# JSON's true is not 1 second, "5" is not 5, and a field the route does not know is a typo:
# each is refused naming the field and what it should be, and changes nothing
WRONG_TYPES = [
    ("POST", "/admin/tenants/acme/keys", {"expires_in_s": True}, "body.expires_in_s: Input should be a valid number, got a boolean"),
    ("POST", "/admin/keys", {"expires_in_s": "60"}, "body.expires_in_s: Input should be a valid number, got a string"),
    ("POST", "/admin/tenants", {"name": "globex", "quotas": {"rps": True}}, "body.quotas.rps: Input should be a valid number, got a boolean"),
    ("POST", "/admin/tenants", {"name": 7}, "body.name: Input should be a valid string, got a number"),
    ("PATCH", "/admin/tenants/acme", {"weight": True}, "body.weight: Input should be a valid number, got a boolean"),
    ("PATCH", "/admin/tenants/acme", {"burst": 1.5}, "body.burst: Input should be a valid integer, got a number"),
    ("PATCH", "/admin/tenants/acme", {"max_concurrent": "4"}, "body.max_concurrent: Input should be a valid integer, got a string"),
    ("PATCH", "/admin/tenants/acme", {"service_class": "gold"}, "body.service_class: Input should be 'interactive' or 'batch'"),
    ("PATCH", "/admin/tenants/acme", {"memory_share": 1.5}, "body.memory_share: Input should be less than or equal to 1"),
    ("PATCH", "/admin/tenants/acme", {"memory_share": True}, "body.memory_share: Input should be a valid number, got a boolean"),
    ("POST", "/admin/instances", {"http_url": "h:1", "grpc_url": "h:2", "memory_bytes": True}, "body.memory_bytes: Input should be a valid integer, got a boolean"),
    ("POST", "/admin/instances/register", {"instance_id": "w1", "http_url": "h:1", "grpc_url": "h:2", "memory_bytes": 1, "ttl_s": "5"}, "body.ttl_s: Input should be a valid integer, got a string"),
    ("POST", "/admin/instances/w1/heartbeat", {"lease_id": 1.0}, "body.lease_id: Input should be a valid integer, got a number"),
]


@pytest.mark.parametrize(("method", "path", "body", "error"), WRONG_TYPES,
                         ids=[f"{m} {p} {next(iter(b))}" for m, p, b, _ in WRONG_TYPES])
async def test_a_body_field_of_the_wrong_json_type_is_refused_naming_field_and_type(
        cp: RunningApp, method: str, path: str, body: dict[str, object], error: str) -> None:
    assert (await cp.admin("POST", "/admin/tenants", json={"name": "acme"})).status_code == 201
    before = (await cp.admin("GET", "/admin/tenants/acme")).json()
    r = await cp.admin(method, path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == f"invalid request: {error}"
    assert (await cp.admin("GET", "/admin/tenants/acme")).json() == before
    assert (await cp.admin("GET", "/admin/tenants/acme/keys")).json() == {"keys": []}
    assert [t["name"] for t in (await cp.admin("GET", "/admin/tenants")).json()["tenants"]] == ["acme"]
    assert (await cp.admin("GET", "/admin/instances")).json() == []


async def test_a_key_lifetime_of_true_issues_no_key_and_a_number_still_works(cp: RunningApp) -> None:
    assert (await cp.admin("POST", "/admin/tenants", json={"name": "acme"})).status_code == 201
    assert (await cp.admin("POST", "/admin/tenants/acme/keys", json={"expires_in_s": True})).status_code == 400
    r = await cp.admin("POST", "/admin/tenants/acme/keys", json={"expires_in_s": 60})  # an int is a number
    assert r.status_code == 201, r.text
    assert r.json()["expires_at"] > 0
    assert len((await cp.admin("GET", "/admin/tenants/acme/keys")).json()["keys"]) == 1


async def test_an_unknown_body_field_is_refused_listing_the_fields_there_are(cp: RunningApp) -> None:
    assert (await cp.admin("POST", "/admin/tenants", json={"name": "acme"})).status_code == 201
    # "rate" for rate_per_s: dropped silently, the tenant would keep no rate quota
    r = await cp.admin("PATCH", "/admin/tenants/acme", json={"rate": 5})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == ("invalid request: body: unknown field rate: this body takes weight, "
                                 "rate_per_s, burst, max_concurrent, service_class, memory_share, "
                                 "memory_share_bytes")
    assert (await cp.admin("GET", "/admin/tenants/acme")).json()["rate_per_s"] is None
    r = await cp.admin("POST", "/admin/tenants", json={"name": "globex", "weight": 2, "colour": "red"})
    assert r.status_code == 400 and "unknown fields colour, weight: this body takes name, display_name, quotas" in r.json()["error"]
    r = await cp.admin("POST", "/admin/keys", json={"expires_in": 60})
    assert r.status_code == 400 and "unknown field expires_in: this body takes expires_in_s" in r.json()["error"]
