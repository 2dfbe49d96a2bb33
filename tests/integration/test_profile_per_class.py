"""A model is profiled again when it lands on an instance class it was never profiled on
(issue 5: "and again on a new instance class"), on real processes: ``inferplex up`` with one
worker (class ``cpu``) plus an external worker registered by the admin as ``cpu-large``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from tests.integration.cp_harness import auth, running_up
from tests.support import models
from tests.support.procs import wait_until
from tests.support.worker import run_worker


def test_first_load_on_a_new_class_profiles_the_model_for_that_class(tmp_path: Path) -> None:
    with running_up(tmp_path / "data", tmp_path / "up.log", workers=1) as cp, \
            run_worker(tmp_path, "--memory-budget", "1GiB", credential=cp.instance_credential()) as ext:
        key = cp.create_tenant("acme")
        assert cp.upload(key, "mlp", models.mlp_onnx().data).status_code == 201
        cp.wait_model_status(key, "mlp", "ready")

        def classes() -> dict:
            with cp.client(key) as c:
                return c.get("/v2/models/mlp/profile").json()["classes"]

        assert set(classes()) == {"cpu"}
        with cp.admin() as admin:
            r = admin.post("/admin/instances", json={
                "http_url": ext.http_url, "grpc_url": ext.grpc_url, "memory_bytes": 1 << 30,
                "instance_class": "cpu-large"})
            assert r.status_code == 201, r.text
            ext_id = r.json()["instance_id"]

        # first fit takes instances in id order ("ext-..." before "worker-0"): the model
        # is loaded on the new class, which has no profile for it yet
        client = httpclient.InferenceServerClient(cp.http_url)
        inp = httpclient.InferInput("INPUT0", [2, 64], "FP32")
        inp.set_data_from_numpy(np.ones((2, 64), np.float32))
        client.infer("mlp", [inp], headers=auth(key))
        assert cp.holders("acme__mlp") == [ext_id]

        # live observations of the one inference may show the class first; the offline
        # profile covers every batch size up to max_batch_size
        wait_until(lambda: sorted(classes().get("cpu-large", {}).get("exec", {}), key=int)
                   == ["1", "2", "4", "8"], 60, "an offline profile for class cpu-large")
        profiled = classes()
        assert set(profiled) == {"cpu", "cpu-large"}
        assert profiled["cpu-large"]["exec"]["1"]["n"] > 0 and profiled["cpu-large"]["memory_bytes"]
        # the first class's profile is kept, and the model stays ready throughout
        assert profiled["cpu"]["exec"]["1"]["n"] > 0
        assert cp.model_status(key, "mlp")["versions"][-1]["status"] == "ready"
