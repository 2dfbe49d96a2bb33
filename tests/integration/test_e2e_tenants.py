"""End to end against ``inferplex up`` (real process, 2 workers): two tenants, unmodified
tritonclient over HTTP and gRPC (sync and asyncio) with only an auth header added."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from tests.integration.cp_harness import ControlPlane, auth, metric_value, running_up
from tests.support import models
from tests.support.worker import run_worker

MLP_IN = 64


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root = tmp_path_factory.mktemp("e2e")
    with running_up(root / "data", root / "up.log") as cp:
        yield cp


@pytest.fixture(scope="module")
def keys(cp: ControlPlane) -> dict[str, str]:
    acme, globex = cp.create_tenant("acme"), cp.create_tenant("globex")
    r = cp.upload(acme, "mlp", models.mlp_onnx().data)
    assert r.status_code == 201, r.text
    r = cp.upload(acme, "secret", models.simple().data)
    assert r.status_code == 201, r.text
    # same model name, different tenant and format: names are per tenant
    r = cp.upload(globex, "mlp", models.mlp_torchscript().data, max_batch_size=64,
                  inputs=[{"name": "INPUT__0", "datatype": "FP32", "dims": [MLP_IN]}],
                  outputs=[{"name": "OUTPUT__0", "datatype": "FP32", "dims": [10]}])
    assert r.status_code == 201, r.text
    for key, name in ((acme, "mlp"), (acme, "secret"), (globex, "mlp")):
        cp.wait_model_status(key, name, "ready")
    return {"acme": acme, "globex": globex}


def _x(batch: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, MLP_IN)).astype(np.float32)


def _http_infer(cp: ControlPlane, key: str, model: str, in_name: str, out_name: str,
                x: np.ndarray, binary: bool = True, **kw: object) -> np.ndarray:
    with httpclient.InferenceServerClient(cp.http_url) as c:
        inp = httpclient.InferInput(in_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput(out_name, binary_data=binary)
        res = c.infer(model, [inp], outputs=[out], headers=auth(key), **kw)
        assert res.get_response()["model_name"] == model
        return res.as_numpy(out_name)


def _grpc_infer(cp: ControlPlane, key: str, model: str, in_name: str, out_name: str,
                x: np.ndarray) -> np.ndarray:
    with grpcclient.InferenceServerClient(cp.grpc_url) as c:
        inp = grpcclient.InferInput(in_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = c.infer(model, [inp], headers=auth(key), request_id="req-7")
        assert res.get_response().model_name == model
        assert res.get_response().id == "req-7"
        return res.as_numpy(out_name)


def test_each_tenant_infers_its_own_model_over_http_and_grpc(cp: ControlPlane, keys: dict[str, str]) -> None:
    x = _x()
    want = models.mlp_reference(x)
    np.testing.assert_allclose(_http_infer(cp, keys["acme"], "mlp", "INPUT0", "OUTPUT0", x), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_http_infer(cp, keys["acme"], "mlp", "INPUT0", "OUTPUT0", x, binary=False),
                               want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_http_infer(cp, keys["acme"], "mlp", "INPUT0", "OUTPUT0", x,
                                           request_compression_algorithm="gzip",
                                           response_compression_algorithm="deflate"), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_grpc_infer(cp, keys["acme"], "mlp", "INPUT0", "OUTPUT0", x), want, rtol=1e-4, atol=1e-5)
    # globex's "mlp" is its own TorchScript model: Triton's INPUT__0 naming proves where it went
    np.testing.assert_allclose(_http_infer(cp, keys["globex"], "mlp", "INPUT__0", "OUTPUT__0", x), want,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_grpc_infer(cp, keys["globex"], "mlp", "INPUT__0", "OUTPUT__0", x), want,
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(InferenceServerException, match="INPUT0"):
        _grpc_infer(cp, keys["globex"], "mlp", "INPUT0", "OUTPUT0", x)


async def test_asyncio_clients_work_with_only_an_auth_header(cp: ControlPlane, keys: dict[str, str]) -> None:
    x = _x(2, seed=5)
    want = models.mlp_reference(x)
    h = httpaio.InferenceServerClient(cp.http_url)
    g = grpcaio.InferenceServerClient(cp.grpc_url)
    try:
        assert await h.is_server_live() and await g.is_server_live()
        assert await h.is_model_ready("mlp", headers=auth(keys["acme"]))
        assert await g.is_model_ready("mlp", headers=auth(keys["acme"]))
        md = await g.get_model_metadata("mlp", headers=auth(keys["acme"]), as_json=True)
        assert md["name"] == "mlp" and md["inputs"][0]["shape"] == ["-1", str(MLP_IN)]
        hi = httpaio.InferInput("INPUT0", list(x.shape), "FP32")
        hi.set_data_from_numpy(x)
        gi = grpcaio.InferInput("INPUT0", list(x.shape), "FP32")
        gi.set_data_from_numpy(x)
        hr, gr = await asyncio.gather(h.infer("mlp", [hi], headers=auth(keys["acme"])),
                                      g.infer("mlp", [gi], headers=auth(keys["acme"])))
        np.testing.assert_allclose(hr.as_numpy("OUTPUT0"), want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gr.as_numpy("OUTPUT0"), want, rtol=1e-4, atol=1e-5)
    finally:
        await h.close()
        await g.close()


def _http_answers(cp: ControlPlane, key: str, model: str) -> list[tuple[int, str]]:
    """(status, error text with the model name masked) for infer, metadata, ready, config, stats, delete."""
    x = np.zeros((1, 16), dtype=np.int32)
    out = []
    with cp.client(key) as c:
        body = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": x.ravel().tolist()},
                           {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": x.ravel().tolist()}]}
        for r in (c.post(f"/v2/models/{model}/infer", json=body), c.get(f"/v2/models/{model}"),
                  c.get(f"/v2/models/{model}/ready"), c.get(f"/v2/models/{model}/config"),
                  c.get(f"/v2/models/{model}/stats"), c.delete(f"/v1/models/{model}"),
                  c.get(f"/v1/models/{model}")):
            out.append((r.status_code, r.text.replace(model, "<m>")))
    return out


def test_ups_workers_serve_tenants_only_through_the_control_plane(cp: ControlPlane, keys: dict[str, str]) -> None:
    """Anyone on the machine can reach the workers' loopback ports; only the control plane
    holds the credential they demand (data_dir/instance.key, 0600)."""
    _http_infer(cp, keys["acme"], "mlp", "INPUT0", "OUTPUT0", _x())  # loaded somewhere
    assert (cp.data_dir / "instance.key").stat().st_mode & 0o077 == 0
    x = _x()
    for inst in cp.instances():
        with httpclient.InferenceServerClient(inst["http_url"]) as h, \
                grpcclient.InferenceServerClient(inst["grpc_url"]) as g:
            assert h.is_server_ready() and g.is_server_live()  # probes need no credential
            for call in (lambda: h.get_model_repository_index(), lambda: g.get_model_repository_index(),
                         lambda: g.get_inference_statistics(), lambda: h.get_model_metadata("acme__mlp"),
                         lambda: _direct_infer(h, x), lambda: _direct_infer(g, x)):
                with pytest.raises(InferenceServerException, match="is restricted, expecting header"):
                    call()
            ok = cp.instance_credential()
            assert {m.name for m in g.get_model_repository_index(headers=ok.grpc_headers()).models} >= \
                   {m["name"] for m in inst["models"]}


def _direct_infer(client: httpclient.InferenceServerClient | grpcclient.InferenceServerClient,
                  x: np.ndarray) -> None:
    module = httpclient if isinstance(client, httpclient.InferenceServerClient) else grpcclient
    inp = module.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    client.infer("acme__mlp", [inp])


def test_other_tenants_model_answers_exactly_like_a_missing_one(cp: ControlPlane, keys: dict[str, str]) -> None:
    theirs = _http_answers(cp, keys["globex"], "secret")
    missing = _http_answers(cp, keys["globex"], "nosuch")
    assert theirs == missing
    assert all(status == 404 for status, _ in theirs), theirs
    assert "Request for unknown model: '<m>' is not found" in theirs[0][1]
    # gRPC: same code and text
    with grpcclient.InferenceServerClient(cp.grpc_url) as c:
        for call in (lambda m: c.get_model_metadata(m, headers=auth(keys["globex"])),
                     lambda m: c.is_model_ready(m, headers=auth(keys["globex"])),
                     lambda m: c.get_inference_statistics(m, headers=auth(keys["globex"]))):
            errors = []
            for m in ("secret", "nosuch"):
                with pytest.raises(InferenceServerException) as info:
                    call(m)
                errors.append((info.value.status(), info.value.message().replace(m, "<m>")))
            assert errors[0] == errors[1] and errors[0][0] == "StatusCode.NOT_FOUND"
    # and acme's model is untouched by globex's delete attempt
    assert _http_infer(cp, keys["acme"], "mlp", "INPUT0", "OUTPUT0", _x()).shape == (3, 10)


def test_index_and_statistics_are_scoped_and_renamed(cp: ControlPlane, keys: dict[str, str]) -> None:
    _grpc_infer(cp, keys["acme"], "mlp", "INPUT0", "OUTPUT0", _x())
    with httpclient.InferenceServerClient(cp.http_url) as c:
        index = c.get_model_repository_index(headers=auth(keys["acme"]))
        stats = c.get_inference_statistics(headers=auth(keys["acme"]))
    assert {(m["name"], m["state"]) for m in index} >= {("mlp", "READY")}
    assert {m["name"] for m in index} == {"mlp", "secret"}
    names = {s["name"]: s for s in stats["model_stats"]}
    assert set(names) == {"mlp", "secret"}
    assert int(names["mlp"]["inference_count"]) >= 1
    with grpcclient.InferenceServerClient(cp.grpc_url) as c:
        gindex = c.get_model_repository_index(headers=auth(keys["globex"]), as_json=True)
    assert [m["name"] for m in gindex["models"]] == ["mlp"]
    assert "__" not in json.dumps(gindex) + json.dumps(stats)


def test_bad_missing_and_revoked_keys_are_refused_on_both_protocols(cp: ControlPlane, keys: dict[str, str]) -> None:
    with cp.admin() as c:
        r = c.post("/admin/tenants/acme/keys", json={})
        doomed = r.json()
        assert r.status_code == 201
    x = _x()
    assert _http_infer(cp, doomed["key"], "mlp", "INPUT0", "OUTPUT0", x).shape == (3, 10)
    with cp.admin() as c:
        assert c.delete(f"/admin/keys/{doomed['key_id']}").status_code == 200
    for key, text in ((doomed["key"], "unknown or revoked"), ("ipx_not-a-key", "unknown or revoked"),
                      (None, "missing API key")):
        headers = auth(key) if key else {}
        with httpclient.InferenceServerClient(cp.http_url) as c:
            with pytest.raises(InferenceServerException, match=text) as info:
                c.get_model_metadata("mlp", headers=headers)
            assert info.value.status() == "401"
        with grpcclient.InferenceServerClient(cp.grpc_url) as c:
            inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            with pytest.raises(InferenceServerException, match=text) as info:
                c.infer("mlp", [inp], headers=headers)
            assert info.value.status() == "StatusCode.UNAUTHENTICATED"


def test_tenants_cannot_use_the_repository_api_and_admins_cannot_infer(cp: ControlPlane,
                                                                       keys: dict[str, str]) -> None:
    with grpcclient.InferenceServerClient(cp.grpc_url) as c:
        with pytest.raises(InferenceServerException, match="POST /v1/models") as info:
            c.load_model("mlp", headers=auth(keys["acme"]))
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    with httpclient.InferenceServerClient(cp.http_url) as c:
        with pytest.raises(InferenceServerException, match="POST /v1/models"):
            c.unload_model("mlp", headers=auth(keys["acme"]))
        with pytest.raises(InferenceServerException, match="tenant API key"):
            c.get_model_metadata("mlp", headers=auth(cp.admin_key))


def test_cold_model_loads_once_under_concurrent_requests_and_shows_in_admin(cp: ControlPlane,
                                                                         keys: dict[str, str]) -> None:
    assert cp.holders("acme__secret") == []  # uploaded and profiled, never requested
    a = np.arange(16, dtype=np.int32).reshape(1, 16)

    def one(_: int) -> np.ndarray:
        with grpcclient.InferenceServerClient(cp.grpc_url) as c:
            return c.infer("secret", models.simple_inputs(grpcclient, a), headers=auth(keys["acme"])).as_numpy("OUTPUT0")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    for r in results:
        np.testing.assert_array_equal(r, a + a)
    assert len(cp.holders("acme__secret")) == 1
    text = cp.metrics()
    assert metric_value(text, 'inferplex_model_loads_total{tenant="acme",model="secret",outcome="ok"}') == 1
    assert metric_value(text, 'inferplex_cold_starts_total{tenant="acme",model="secret"}') >= 1
    inst = next(i for i in cp.instances() if i["instance_id"] == cp.holders("acme__secret")[0])
    assert inst["healthy"] and 0 < inst["used_bytes"] <= inst["memory_bytes"]
    assert metric_value(text, 'inferplex_requests_total{tenant="acme",model="secret",protocol="grpc",status="OK"}') == 8


def test_metrics_count_requests_and_errors_by_tenant(cp: ControlPlane, keys: dict[str, str]) -> None:
    before = cp.metrics()
    series = 'inferplex_requests_total{tenant="globex",model="mlp",protocol="http",status="200"}'
    for _ in range(3):
        _http_infer(cp, keys["globex"], "mlp", "INPUT__0", "OUTPUT__0", _x(1))
    with pytest.raises(InferenceServerException):
        _http_infer(cp, keys["globex"], "nosuch", "INPUT__0", "OUTPUT__0", _x(1))
    after = cp.metrics()
    assert metric_value(after, series) - metric_value(before, series) == 3
    # names the tenant does not have share one label: each guess must not add a series
    assert metric_value(after, 'inferplex_errors_total{tenant="globex",model="<unknown>",kind="NotFound"}') >= 1
    assert "nosuch" not in after
    assert "inferplex_request_duration_seconds_bucket" in after


def test_deleting_a_model_unloads_it_and_it_stops_answering(cp: ControlPlane, keys: dict[str, str]) -> None:
    key = keys["globex"]
    r = cp.upload(key, "tmp", models.mlp_onnx().data)
    assert r.status_code == 201, r.text
    assert _http_infer(cp, key, "tmp", "INPUT0", "OUTPUT0", _x()).shape == (3, 10)
    assert cp.holders("globex__tmp")
    with cp.client(key) as c:
        assert c.delete("/v1/models/tmp").status_code == 200
    assert cp.holders("globex__tmp") == []
    with grpcclient.InferenceServerClient(cp.grpc_url) as c:
        with pytest.raises(InferenceServerException, match="unknown model") as info:
            c.get_model_metadata("tmp", headers=auth(key))
        assert info.value.status() == str(grpc.StatusCode.NOT_FOUND)


def test_up_log_has_the_addresses(cp: ControlPlane) -> None:
    log = cp.proc.log()
    assert f"http://127.0.0.1:{cp.http_port}" in log and f"127.0.0.1:{cp.grpc_port}" in log
    assert cp.admin_key in log and Path(cp.data_dir / "admin.key").stat().st_mode & 0o777 == 0o600


def test_upload_is_profiled_on_a_worker_before_ready(cp: ControlPlane, keys: dict[str, str]) -> None:
    body = cp.model_status(keys["acme"], "mlp")
    latest = (body.get("versions") or [body])[-1]
    assert latest["status"] == "ready", latest
    cpu = latest["profile"]["classes"]["cpu"]
    assert cpu["load_time_cold_s"]["n"] == 1 and cpu["exec"]["1"]["p50_s"] > 0


def test_admin_registers_an_external_instance_and_models_load_there(
        cp: ControlPlane, keys: dict[str, str], tmp_path: Path) -> None:
    with run_worker(tmp_path, "--memory-budget", "1GiB", credential=cp.instance_credential()) as ext, \
            cp.admin() as admin:
        r = admin.post("/admin/instances", json={"http_url": ext.http_url, "grpc_url": f"127.0.0.1:{ext.grpc_port}",
                                                 "memory_bytes": 1 << 30})
        assert r.status_code == 201, r.text
        view = r.json()
        assert view["kind"] == "external" and view["healthy"] and view["models"] == []
        bad = admin.post("/admin/instances", json={"http_url": "nowhere", "grpc_url": "x", "memory_bytes": 1})
        assert bad.status_code == 400 and "host:port" in bad.json()["error"]
        with cp.client(keys["acme"]) as tenant:
            assert tenant.get("/admin/instances").status_code == 403
        # first fit takes instances in id order, and "ext-..." sorts before "worker-..."
        assert cp.upload(keys["globex"], "onext", models.mlp_onnx().data).status_code == 201
        assert _http_infer(cp, keys["globex"], "onext", "INPUT0", "OUTPUT0", _x()).shape == (3, 10)
        listed = {i["instance_id"]: i for i in admin.get("/admin/instances").json()}
        assert "globex__onext" in {m["name"] for m in listed[view["instance_id"]]["models"]}
        # the instance drops the model behind the control plane's back (as a restart would):
        # the next requests are routed again and load it again, not answered "unknown model"
        with httpclient.InferenceServerClient(ext.http_url) as direct:
            direct.unload_model("globex__onext", headers=ext.http_headers())
            assert not direct.is_model_ready("globex__onext", headers=ext.http_headers())
            assert _http_infer(cp, keys["globex"], "onext", "INPUT0", "OUTPUT0", _x()).shape == (3, 10)
            assert direct.is_model_ready("globex__onext", headers=ext.http_headers())
            direct.unload_model("globex__onext", headers=ext.http_headers())
            assert not direct.is_model_ready("globex__onext", headers=ext.http_headers())
            assert _grpc_infer(cp, keys["globex"], "onext", "INPUT0", "OUTPUT0", _x()).shape == (3, 10)
            assert direct.is_model_ready("globex__onext", headers=ext.http_headers())
        assert admin.delete(f"/admin/instances/{view['instance_id']}").status_code == 204
        assert view["instance_id"] not in {i["instance_id"] for i in admin.get("/admin/instances").json()}
        assert admin.delete(f"/admin/instances/{view['instance_id']}").status_code == 404
