"""The planner knows the workers' artifact caches (issue 12's tiers): through real ``inferplex
up`` with one real worker whose budget holds two of three models, a model evicted there is
listed in its cache (the leader reads the worker's memory report), ``/admin/placement`` shows
it, and its next load there is planned and made warm: no files sent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from tests.integration.cp_harness import http_infer, running_up
from tests.support.models import mlp_onnx, mlp_reference
from tests.support.procs import wait_until


def _placement(cp) -> dict:  # noqa: ANN001 - the harness's ControlPlane
    with cp.admin() as c:
        r = c.get("/admin/placement")
        assert r.status_code == 200, r.text
        return r.json()


def test_an_evicted_model_is_known_cached_and_reloads_warm(tmp_path: Path) -> None:
    env = {"INFERPLEX_PROFILE_ON_UPLOAD": "false"}
    with running_up(tmp_path / "data", tmp_path / "up.log", workers=1, worker_memory="30MiB", env=env) as cp:
        key = cp.create_tenant("acme")
        for name in ("a", "b", "c"):  # the same graph in distinct files (the cache is by content)
            model = onnx.load_from_string(mlp_onnx().data)
            model.doc_string = f"model {name}"
            assert cp.upload(key, name, model.SerializeToString()).status_code == 201
            cp.wait_model_status(key, name, "ready")
        x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
        want = mlp_reference(x)
        for name in ("a", "b", "c"):  # the third evicts one of the first two
            np.testing.assert_allclose(http_infer(cp, key, name, x), want, rtol=1e-4, atol=1e-5)
        (worker,) = _placement(cp)["instances"]
        resident = {m["model"] for m in worker["models"]}
        (evicted,) = {"acme/a", "acme/b"} - resident

        def listed() -> bool:
            (w,) = _placement(cp)["instances"]
            return evicted in w["cached_models"]

        wait_until(listed, 30, f"{evicted} to be listed in the worker's cache")
        (w,) = _placement(cp)["instances"]
        assert w["cache"]["entries"] >= 1 and len(w["cache"]["digests"]) == w["cache"]["entries"]
        assert not set(w["cached_models"]) & {m["model"] for m in w["models"]}  # resident ones are not in it

        np.testing.assert_allclose(http_infer(cp, key, evicted.split("/")[1], x), want, rtol=1e-4, atol=1e-5)
        decisions = [d["text"] for d in _placement(cp)["decisions"]]
        loaded = [t for t in decisions if t.startswith(f"loaded {evicted} on ")]
        assert loaded and "(cached there)" in loaded[0], decisions[:5]
        assert f"acme__{evicted.split('/')[1]}" in cp.proc.log() and "(from its artifact cache)" in cp.proc.log()
