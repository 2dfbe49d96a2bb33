"""A tenant whose model runs as long as its inputs say, against ``inferplex up`` (real
control plane, worker and model hosts): profiling's exercise run refuses the obvious one
at upload; the one that hides from profiling is stopped at its SLO on every request and
quarantined (status failed, reason shown); another tenant's traffic runs throughout and
its tail stays bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.integration.cp_harness import ControlPlane, OtherTenant, auth, running_up
from tests.support import hostile_models, models
from tests.support.procs import wait_until

SLO_MS = 100


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root: Path = tmp_path_factory.mktemp("runaway")
    with running_up(root / "data", root / "up.log", workers=1, worker_memory="2GiB") as cp:
        yield cp


def _runaway_grpc(cp: ControlPlane, key: str, name: str, trips: float) -> None:
    with grpcclient.InferenceServerClient(cp.grpc_url) as c:
        t = grpcclient.InferInput("TRIPS", [1], "FP32")
        t.set_data_from_numpy(np.array([trips], np.float32))
        x = grpcclient.InferInput("INPUT0", [1, hostile_models.LOOP_WIDTH], "FP32")
        x.set_data_from_numpy(np.full((1, hostile_models.LOOP_WIDTH), 0.5, np.float32))
        c.infer(name, [t, x], headers=auth(key), client_timeout=60)


def _status(cp: ControlPlane, key: str, name: str) -> dict:
    return cp.model_status(key, name)["versions"][-1]


def test_a_runaway_model_is_refused_or_stopped_and_quarantined_while_another_tenant_is_served(
        cp: ControlPlane) -> None:
    victim, hostile = cp.create_tenant("victim"), cp.create_tenant("hostile")
    # the victim's target allows for a stopped execution ahead of it (the hostile SLO plus the
    # stop margin): one executor per worker, until the scheduler orders and places requests
    assert cp.upload(victim, "mlp", models.mlp_onnx().data, slo_ms=1000).status_code == 201
    cp.wait_model_status(victim, "mlp", "ready", timeout_s=120)
    with OtherTenant(cp, victim) as traffic:
        # 1. the trip count is an integer input: profiling's exercise run catches it
        loop = hostile_models.runaway_loop("loop")
        assert cp.upload(hostile, "loop", loop.data, max_batch_size=0, slo_ms=100).status_code == 201
        cp.wait_model_status(hostile, "loop", "failed", timeout_s=120)
        assert "ran past" in _status(cp, hostile, "loop")["reason"]

        # 2. it hides behind a float: profiled fine, then stopped at its SLO on every request
        sneaky = hostile_models.runaway_loop("sneaky", float_trips=True)
        assert cp.upload(hostile, "sneaky", sneaky.data, max_batch_size=0, slo_ms=SLO_MS).status_code == 201
        cp.wait_model_status(hostile, "sneaky", "ready", timeout_s=120)
        codes = []

        def quarantined() -> bool:
            try:
                _runaway_grpc(cp, hostile, "sneaky", 1e12)
            except InferenceServerException as exc:
                codes.append(exc.status())
            return _status(cp, hostile, "sneaky")["status"] == "failed"

        wait_until(quarantined, 90, "the runaway model to be quarantined", interval_s=0.3)
        assert "StatusCode.DEADLINE_EXCEEDED" in codes, codes
        assert "quarantined" in _status(cp, hostile, "sneaky")["reason"]
        with pytest.raises(InferenceServerException) as caught:
            _runaway_grpc(cp, hostile, "sneaky", 1.0)
        assert "quarantined" in caught.value.message()
    assert not traffic.failures, traffic.failures[:3]
    assert len(traffic.latencies) > 50
    # a stopped execution holds the worker for its SLO plus the stop margin; generous for CI
    assert traffic.p99() < 2.0, f"victim p99 {traffic.p99():.3f}s"
