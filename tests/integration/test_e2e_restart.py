"""``inferplex up`` restarted on the same data directory keeps tenants, keys and models;
bad uploads are refused end to end; a model that fits no worker gets a clear 503."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.cp_harness import auth, grpc_infer, running_up
from tests.support import models


def test_restart_keeps_tenants_keys_and_models_and_serves_them_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    x = np.ones((2, 64), dtype=np.float32)
    with running_up(data, tmp_path / "up1.log", workers=1) as cp:
        key = cp.create_tenant("acme")
        assert cp.upload(key, "mlp", models.mlp_onnx().data).status_code == 201
        cp.wait_model_status(key, "mlp", "ready")
        first = grpc_infer(cp, key, "mlp", x)
        admin_key = cp.admin_key
        assert admin_key in cp.proc.log()
    with running_up(data, tmp_path / "up2.log", workers=1) as cp:
        assert cp.admin_key == admin_key and admin_key not in cp.proc.log()  # shown once only
        with cp.admin() as c:
            assert [t["name"] for t in c.get("/admin/tenants").json()["tenants"]] == ["acme"]
        assert cp.model_status(key, "mlp")["name"] == "mlp"
        # the new worker starts empty: the request loads the model again
        np.testing.assert_array_equal(grpc_infer(cp, key, "mlp", x), first)
        with httpclient.InferenceServerClient(cp.http_url) as c:
            assert c.is_model_ready("mlp", headers=auth(key))


def test_bad_uploads_are_refused_and_a_model_that_fits_nowhere_gets_503(tmp_path: Path) -> None:
    env = {"INFERPLEX_MAX_UPLOAD_BYTES": str(20 << 20), "INFERPLEX_PROFILE_ON_UPLOAD": "false"}
    # 24 MiB budget: the simple model (its host process measured ~11 MB private) loads; the
    # wide model's 16 MiB file fits the upload limit but its estimate (twice the file) fits no worker
    with running_up(tmp_path / "data", tmp_path / "up.log", workers=1, worker_memory="24MiB", env=env) as cp:
        key = cp.create_tenant("acme")
        refusals = {
            "corrupt": (models.corrupt_onnx(), {}, "ONNX"),
            "pickled": (models.pickle_pt(), {}, "not a TorchScript archive"),
            "huge": (b"\0" * (21 << 20), {}, "limit"),
            "mismatch": (models.mlp_onnx().data,
                         {"inputs": [{"name": "WRONG", "datatype": "FP32", "dims": [64]}]}, "WRONG"),
        }
        for name, (data, opts, text) in refusals.items():
            r = cp.upload(key, name, data, **opts)
            assert r.status_code in (400, 413), (name, r.status_code, r.text)
            assert text in r.json()["error"], (name, r.text)
        with cp.client(key) as c:
            assert c.get("/v1/models").json()["models"] == []
        assert cp.upload(key, "small", models.simple().data).status_code == 201
        assert cp.upload(key, "wide", models.wide_onnx().data).status_code == 201
        cp.wait_model_status(key, "wide", "ready")
        a = np.ones((1, 16), dtype=np.int32)
        with httpclient.InferenceServerClient(cp.http_url) as c:
            c.infer("small", models.simple_inputs(httpclient, a), headers=auth(key))
            x = httpclient.InferInput("INPUT0", [1, 1024], "FP32")
            x.set_data_from_numpy(np.ones((1, 1024), dtype=np.float32))
            with pytest.raises(InferenceServerException) as info:
                c.infer("wide", [x], headers=auth(key))
        assert info.value.status() == "503"
        msg = json.dumps(info.value.message())
        assert "of memory, more than any inference instance has" in msg and "worker-" not in msg
