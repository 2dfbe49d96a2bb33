"""The gateway's body limit (INFERPLEX_MAX_REQUEST_BYTES), through unmodified tritonclient:
an oversized request is refused with a message naming the limit, and the same tenant's
next request of a normal size is served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.cp_harness import ControlPlane, auth, running_up
from tests.support import models

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root: Path = tmp_path_factory.mktemp("limits")
    with running_up(root / "data", root / "up.log", workers=1,
                    env={"INFERPLEX_MAX_REQUEST_BYTES": str(LIMIT)}) as cp:
        yield cp


@pytest.fixture(scope="module")
def key(cp: ControlPlane) -> str:
    key = cp.create_tenant("acme")
    assert cp.upload(key, "mlp", models.mlp_onnx().data, max_batch_size=1024).status_code == 201
    cp.wait_model_status(key, "mlp", "ready")
    return key


def test_http_body_over_the_limit_gets_413_and_the_next_request_is_served(cp: ControlPlane, key: str) -> None:
    client = httpclient.InferenceServerClient(cp.http_url)
    big = np.zeros((512, 64), np.float32)  # 128 KiB of tensor data
    inp = httpclient.InferInput("INPUT0", list(big.shape), "FP32")
    inp.set_data_from_numpy(big)
    with pytest.raises(InferenceServerException) as err:
        client.infer("mlp", [inp], headers=auth(key))
    assert err.value.status() == "413"
    assert str(LIMIT) in str(err.value) and "limit" in str(err.value)
    small = httpclient.InferInput("INPUT0", [2, 64], "FP32")
    small.set_data_from_numpy(np.ones((2, 64), np.float32))
    assert client.infer("mlp", [small], headers=auth(key)).as_numpy("OUTPUT0").shape == (2, 10)


def test_grpc_message_over_the_limit_is_resource_exhausted(cp: ControlPlane, key: str) -> None:
    client = grpcclient.InferenceServerClient(cp.grpc_url)
    big = np.zeros((512, 64), np.float32)
    inp = grpcclient.InferInput("INPUT0", list(big.shape), "FP32")
    inp.set_data_from_numpy(big)
    with pytest.raises(InferenceServerException) as err:
        client.infer("mlp", [inp], headers=auth(key))
    assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    small = grpcclient.InferInput("INPUT0", [2, 64], "FP32")
    small.set_data_from_numpy(np.ones((2, 64), np.float32))
    assert client.infer("mlp", [small], headers=auth(key)).as_numpy("OUTPUT0").shape == (2, 10)
