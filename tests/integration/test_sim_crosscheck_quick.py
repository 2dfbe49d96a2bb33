"""The simulator reads a real model's profile: ``inferplex up`` (one worker) profiles an
uploaded model, ``GET /v2/models/{m}/profile`` answers, ``sim.profiles.from_inferplex_profile``
turns it into a simulator profile, and a short simulated run with it answers in time."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient

from bench.sim_crosscheck import simulate
from sim.profiles import from_inferplex_profile
from sim.workload import SimModel, poisson_workload
from tests.integration.cp_harness import ControlPlane, auth, running_up
from tests.support import models


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, str, dict]]:
    root = tmp_path_factory.mktemp("sim_crosscheck")
    with running_up(root / "data", root / "up.log", workers=1) as cp:
        key = cp.create_tenant("acme")
        r = cp.upload(key, "mlp", models.mlp_onnx().data)
        assert r.status_code == 201, r.text
        cp.wait_model_status(key, "mlp", "ready", timeout_s=120)
        client = httpclient.InferenceServerClient(cp.http_url)
        try:
            x = httpclient.InferInput("INPUT0", [1, 64], "FP32")
            x.set_data_from_numpy(np.ones((1, 64), np.float32))
            for _ in range(5):
                client.infer("mlp", [x], headers=auth(key))
        finally:
            client.close()
        accounted = {p["name"].split("__", 1)[1]: p["bytes"] for i in cp.instances() for p in i["models"]}
        with cp.client(key) as c:
            view = c.get("/v2/models/mlp/profile")
        assert view.status_code == 200, view.text
        yield cp, key, {"view": view.json(), "bytes": accounted.get("mlp")}


def test_a_real_profile_becomes_a_simulator_profile(profiled) -> None:
    _, _, got = profiled
    p = from_inferplex_profile("mlp", got["view"], got["bytes"])
    assert p.bytes > 0 and p.bytes == got["bytes"]
    assert 0 < p.load_warm_s <= p.load_cold_s < 30
    assert [b for b, _ in p.exec_s][0] == 1 and p.max_batch >= 1
    times = [p.exec_at(b) for b in range(1, 2 * p.max_batch)]
    assert all(b >= a for a, b in zip(times, times[1:], strict=False)) and 0 < times[0] < 0.5
    assert p.exec_p99_at(1) >= p.exec_at(1)
    assert "inferplex profile" in p.source


def test_a_short_simulated_run_with_the_real_profile_answers_in_time(profiled) -> None:
    _, _, got = profiled
    p = from_inferplex_profile("mlp", got["view"], got["bytes"])
    w = poisson_workload(1, 20, 50.0, 1)
    o = simulate(w, [SimModel("mlp", "acme", p, 0.1)], 1 << 30, 1, 0.1, 2.0, "sim")
    assert o.sent == sum(len(c) for c in w.chunks()) > 500
    assert o.refused == 0 and o.slo_admitted == 1.0 and o.p99_ms is not None and o.p99_ms < 100
