"""A model whose profiling fails on the instance is `failed` with what to fix, not `ready`
"not profiled" (issue 11): through ``inferplex up`` as a real process and the REST API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.cp_harness import ControlPlane, auth, running_up
from tests.support import models

# the MLP computes on 64 features; this config declares 32, which the file cannot check
# (TorchScript states no shapes): only running it shows the mistake
WRONG_DIMS = {"max_batch_size": 4,
              "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [32]}],
              "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [10]}]}


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root = tmp_path_factory.mktemp("profile_failure")
    with running_up(root / "data", root / "up.log", workers=2) as cp:
        yield cp


@pytest.fixture(scope="module")
def key(cp: ControlPlane) -> str:
    return cp.create_tenant("acme")


def _latest(cp: ControlPlane, key: str, name: str) -> dict[str, Any]:
    return cp.model_status(key, name)["versions"][-1]


def _worker_index(cp: ControlPlane, address: str) -> list[dict[str, Any]]:
    """What one instance itself says it holds (its repository index), not the store's mirror."""
    r = httpx.post(f"http://{address}/v2/repository/index", headers=cp.instance_credential().http_headers(),
                   timeout=10)
    r.raise_for_status()
    return r.json()


def test_a_torchscript_model_failing_on_its_declared_dims_is_failed_with_what_to_fix(
        cp: ControlPlane, key: str) -> None:
    r = cp.upload(key, "pt", models.mlp_torchscript().data, config=json.dumps(WRONG_DIMS))
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "profiling"
    cp.wait_model_status(key, "pt", "failed", timeout_s=90)
    version = _latest(cp, key, "pt")
    reason = version["reason"]
    assert "declared shapes" in reason and "declare the inputs and outputs" in reason, reason
    assert "32" in reason and "64" in reason, reason  # torch's own words: the two sizes that clash
    assert "not profiled" not in reason and "acme__" not in reason and "_profile" not in reason, reason
    assert "an internal address" not in reason, reason  # dims are not addresses
    # nothing half-loaded: no placement, and no instance holds it under any name
    for inst in cp.instances():
        assert inst["models"] == [], inst
        index = _worker_index(cp, inst["http_url"])
        held = [m for m in index if m["name"] in ("acme__pt", "_profile__acme__pt") and m.get("state") == "READY"]
        assert held == [], index
    # and it is not served: a clear refusal, not a 500 from the instance
    with httpclient.InferenceServerClient(cp.http_url) as c:
        inp = httpclient.InferInput("INPUT__0", [1, 32], "FP32")
        inp.set_data_from_numpy(np.ones((1, 32), np.float32))
        with pytest.raises(InferenceServerException) as err:
            c.infer("pt", [inp], headers=auth(key))
    assert err.value.status() == "400", (err.value.status(), err.value.message())


def test_the_same_model_with_the_right_dims_is_ready(cp: ControlPlane, key: str) -> None:
    right = json.loads(json.dumps(WRONG_DIMS))
    right["input"][0]["dims"] = [64]
    r = cp.upload(key, "pt-ok", models.mlp_torchscript().data, config=json.dumps(right))
    assert r.status_code == 201, r.text
    cp.wait_model_status(key, "pt-ok", "ready", timeout_s=90)
    version = _latest(cp, key, "pt-ok")
    assert version["reason"] == "" and version["profile"], version
