"""Hostile or careless upload options: each is a clear 400 that names the option, nothing
is stored, and other tenants' models keep working (real app, real embedded store)."""

from __future__ import annotations

import pytest

from tests.support import models
from tests.support.cp_app import RunningApp, blobs, leftovers, upload_raw


@pytest.mark.parametrize("slo", ["nan", "NaN", "inf", "-inf", "infinity"])
async def test_non_finite_slo_is_refused_and_cannot_break_other_tenants_deletes(
        cp: RunningApp, keys: dict[str, str], slo: str) -> None:
    assert (await upload_raw(cp, keys["globex"], models.simple().data, name="theirs")).status_code == 201
    r = await upload_raw(cp, keys["acme"], models.mlp_onnx().data, name="m", slo_ms=slo)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == f"slo_ms must be a number of milliseconds, got {slo!r}"
    assert cp.services.catalog.list("acme") == [] and leftovers(cp) == []
    assert len(blobs(cp)) == 1
    # a NaN record used to be stored unreadable: every later delete, of any tenant, was a 500
    r = await cp.client.delete("/v1/models/theirs", headers=cp.headers(keys["globex"]))
    assert r.status_code == 200, r.text
    assert blobs(cp) == []


@pytest.mark.parametrize(("option", "value", "error"), [
    ("max_batch_size", str(2**31), f"max_batch_size must be between 0 and {2**31 - 1}, got {2**31}"),
    ("max_batch_size", "-3", f"max_batch_size must be between 0 and {2**31 - 1}, got -3"),
    ("version", str(2**63), f"version must be between 1 and {2**63 - 1}, got {2**63}"),
    ("version", "0", f"version must be between 1 and {2**63 - 1}, got 0"),
])
async def test_numbers_no_instance_can_hold_are_refused_at_upload(
        cp: RunningApp, keys: dict[str, str], option: str, value: str, error: str) -> None:
    # before: stored, then refused by the instance on first load (max_batch_size) or kept
    # as a version no v2 client can name (version)
    r = await upload_raw(cp, keys["acme"], models.mlp_onnx().data, name="m", **{option: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == error
    assert cp.services.catalog.list("acme") == [] and blobs(cp) == [] and leftovers(cp) == []


async def test_an_option_given_twice_is_refused_rather_than_guessed(cp: RunningApp, keys: dict[str, str]) -> None:
    # before: the last form field won, and a form field silently overrode the query parameter
    data = models.mlp_onnx().data
    r = await cp.client.post("/v1/models", headers=cp.headers(keys["acme"]), files=[
        ("file", ("m.onnx", data)), ("name", (None, "a1")), ("name", (None, "a2"))])
    assert r.status_code == 400 and r.json()["error"] == "form field 'name' is given twice: send it once"
    r = await cp.client.post("/v1/models", headers=cp.headers(keys["acme"]), params={"name": "q", "slo_ms": "5"},
                             files=[("file", ("m.onnx", data)), ("name", (None, "f")), ("slo_ms", (None, "5"))])
    assert r.status_code == 400
    assert r.json()["error"] == ("name given both as a query parameter and as a form field, with different "
                                 "values: send each option once")
    assert cp.services.catalog.list("acme") == [] and blobs(cp) == [] and leftovers(cp) == []
