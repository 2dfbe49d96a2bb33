"""Hostile or careless upload options: each is a clear 400 that names the option, nothing
is stored, and other tenants' models keep working (real app, real embedded store)."""

from __future__ import annotations

import pytest

from tests.support import models
from tests.support.cp_app import (
    ADMIN_KEY,
    RunningApp,
    blobs,
    leftovers,
    upload_multipart,
    upload_raw,
)


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


OPTIONS = "config, inputs, max_batch_size, name, outputs, slo_ms, tenant, version"


@pytest.mark.parametrize("option", ["max_batch", "config_pbtxt", "platform", "batch_size"])
async def test_an_unknown_query_option_is_refused_naming_it_and_the_accepted_ones(
        cp: RunningApp, keys: dict[str, str], option: str) -> None:
    # before: dropped silently, and the model stored without what the tenant meant
    r = await upload_raw(cp, keys["acme"], models.mlp_onnx().data, name="m", **{option: "4"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == f"unknown upload option {option!r} (query parameter): the options are {OPTIONS}"
    assert cp.services.catalog.list("acme") == [] and blobs(cp) == [] and leftovers(cp) == []


async def test_an_unknown_form_field_is_refused_naming_it_and_the_accepted_ones(
        cp: RunningApp, keys: dict[str, str]) -> None:
    r = await upload_multipart(cp, keys["acme"], models.mlp_onnx().data, name="m", max_batch="4")
    assert r.status_code == 400, r.text
    assert r.json()["error"] == f"unknown upload option 'max_batch' (form field): the options are {OPTIONS}"
    # the tenant is chosen before the body is read, so it cannot be a form field
    r = await upload_multipart(cp, keys["acme"], models.mlp_onnx().data, name="m", tenant="globex")
    assert r.status_code == 400, r.text
    assert r.json()["error"] == ("tenant is a query parameter (?tenant=<tenant>, admin keys only), "
                                 "not a form field")
    assert cp.services.catalog.list("acme") == [] and cp.services.catalog.list("globex") == []
    assert blobs(cp) == [] and leftovers(cp) == []


async def test_a_query_option_given_twice_is_refused(cp: RunningApp, keys: dict[str, str]) -> None:
    r = await cp.client.post("/v1/models", params=[("name", "m"), ("slo_ms", "5"), ("slo_ms", "50")],
                             content=models.mlp_onnx().data,
                             headers={**cp.headers(keys["acme"]), "Content-Type": "application/octet-stream"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "query parameter 'slo_ms' is given twice: send it once"


class _Body:
    """A request body that counts what the server read of it."""

    def __init__(self, data: bytes, chunk: int = 4096) -> None:
        self.chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
        self.read = 0

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for piece in self.chunks:
            self.read += 1
            yield piece


@pytest.mark.parametrize(("who", "params", "error"), [
    ("admin", {"name": "m"}, "admin keys act on one tenant's models: add ?tenant=<tenant>"),
    ("acme", {"name": "m", "max_batch": "4"},
     f"unknown upload option 'max_batch' (query parameter): the options are {OPTIONS}"),
])
async def test_a_refusal_the_url_decides_comes_before_the_body_is_read(
        cp: RunningApp, keys: dict[str, str], who: str, params: dict[str, str], error: str) -> None:
    body = _Body(models.mlp_onnx().data)
    assert len(body.chunks) > 2
    key = ADMIN_KEY if who == "admin" else keys[who]
    r = await cp.client.post("/v1/models", params=params, content=body,
                             headers={**cp.headers(key), "Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and r.json()["error"] == error
    assert body.read <= 1, f"{body.read} of {len(body.chunks)} chunks were read before the refusal"
    assert leftovers(cp) == []
