"""A model uploaded while every instance is full is profiled, not failed (issue 12): through
real ``inferplex up`` with one real worker whose budget holds two models, the third upload's
profile gets room the way a cold model does (the planner evicts an idle copy), the version
becomes ready with a profile, and every model is still served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from tests.integration.cp_harness import http_infer, running_up
from tests.support.models import mlp_onnx, mlp_reference


def _distinct(name: str) -> bytes:
    model = onnx.load_from_string(mlp_onnx().data)
    model.doc_string = f"model {name}"  # distinct files, the same graph
    return model.SerializeToString()


def test_a_model_uploaded_to_a_full_worker_is_profiled_after_an_eviction(tmp_path: Path) -> None:
    with running_up(tmp_path / "data", tmp_path / "up.log", workers=1, worker_memory="30MiB") as cp:
        key = cp.create_tenant("acme")
        x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
        want = mlp_reference(x)
        for name in ("a", "b"):
            assert cp.upload(key, name, _distinct(name)).status_code == 201
            cp.wait_model_status(key, name, "ready", timeout_s=120)
            np.testing.assert_allclose(http_infer(cp, key, name, x), want, rtol=1e-4, atol=1e-5)
        (worker,) = cp.instances()
        assert len(worker["models"]) == 2  # full: a third host does not fit beside them

        assert cp.upload(key, "c", _distinct("c")).status_code == 201
        cp.wait_model_status(key, "c", "ready", timeout_s=120)
        (version,) = cp.model_status(key, "c")["versions"]
        assert version["status"] == "ready" and not version.get("reason"), version
        assert "cpu" in ((version.get("profile") or {}).get("classes") or {}), version
        with cp.admin() as c:
            decisions = [d["text"] for d in c.get("/admin/placement").json()["decisions"]]
        assert any(t.startswith("evicted acme/") and "for acme/c (profiling)" in t for t in decisions), decisions
        for name in ("a", "b", "c"):  # all still served: the evicted one loads again
            np.testing.assert_allclose(http_infer(cp, key, name, x), want, rtol=1e-4, atol=1e-5)
