"""The TorchServe peer's pieces that need no TorchServe: the handler on batches (run here with a
stand-in for TorchServe's context), which models get a worker, and the config it starts with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.peers import torchserve as ts
from bench.peers import workload as wl
from bench.peers.base import Budget
from bench.peers.torchserve_handler import OCTET, Handler


class Context:
    """What the handler uses of TorchServe's ``ts.context.Context``."""

    def __init__(self, model_dir: Path) -> None:
        self.system_properties = {"model_dir": str(model_dir)}
        self.status: dict[int, tuple[int, str]] = {}
        self.content_type: dict[int, str] = {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type[idx] = value


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list:
    return wl.build_models(tmp_path_factory.mktemp("models"), copies=1, kinds=("mlp_s", "cnn_s"), cpus=None)


def unpacked(m, tmp_path: Path) -> Context:
    """The folder TorchServe unpacks a .mar into: the model file and model.json."""
    d = tmp_path / m.name
    d.mkdir()
    shutil.copy(m.path, d / m.path.name)
    (d / ts.META_FILE).write_text(json.dumps({"format": m.format, "file": m.path.name,
                                              "input_shape": list(m.input_shape), "threads": 1}))
    return Context(d)


def test_a_batch_of_requests_is_answered_each_with_its_own_rows(models: list, tmp_path: Path) -> None:
    for m in models:  # both formats, both input ranks
        ctx = unpacked(m, tmp_path)
        h = Handler()
        h.initialize(ctx)
        x = m.sample_input.astype("<f4")
        two = np.concatenate([x * 0.5, x]).astype("<f4")
        out = h.handle([{"body": bytearray(x.tobytes())}, {"body": bytearray(two.tobytes())},
                        {"data": x.tobytes()}], ctx)
        assert len(out) == 3 and ctx.status == {}
        assert ctx.content_type == {0: OCTET, 1: OCTET, 2: OCTET}
        np.testing.assert_allclose(np.frombuffer(out[0], "<f4").reshape(1, -1), m.sample_output, rtol=1e-3, atol=1e-4)
        second = np.frombuffer(out[1], "<f4").reshape(2, -1)
        np.testing.assert_allclose(second[1:], m.sample_output, rtol=1e-3, atol=1e-4)
        assert not np.allclose(second[:1], m.sample_output, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(np.frombuffer(out[2], "<f4").reshape(1, -1), m.sample_output, rtol=1e-3, atol=1e-4)


def test_a_malformed_request_gets_its_own_400_and_the_rest_of_its_batch_is_answered(models: list,
                                                                                    tmp_path: Path) -> None:
    m = models[0]
    ctx = unpacked(m, tmp_path)
    h = Handler()
    h.initialize(ctx)
    x = m.sample_input.astype("<f4")
    out = h.handle([{"body": bytearray(b"abc")}, {"body": bytearray(x.tobytes())}, {"body": bytearray()}], ctx)
    assert set(ctx.status) == {0, 2} and ctx.status[0][0] == 400
    row = 4 * int(np.prod(m.input_shape))
    assert f"({row} bytes a row); got 3 bytes" in out[0].decode()
    np.testing.assert_allclose(np.frombuffer(out[1], "<f4").reshape(1, -1), m.sample_output, rtol=1e-3, atol=1e-4)


def test_the_first_models_in_the_given_order_that_fit_get_a_worker(models: list) -> None:
    per_model = ts.resident_bytes(models[0])
    assert per_model > ts.WORKER_BASE_BYTES + models[0].weight_bytes  # a worker costs more than its model
    mean = sum(ts.resident_bytes(m) for m in models) / len(models)
    budget = Budget("1", 1, int(2.5 * mean))
    assert [m.name for m in ts.hosted(models, budget)] == [m.name for m in models[:2]]
    assert [m.name for m in ts.hosted(models, Budget("1", 1, 1))] == [models[0].name]  # at least one


def test_the_config_binds_loopback_free_ports_with_token_auth_off_and_registration_on(tmp_path: Path) -> None:
    ports = {"inference": 1001, "management": 1002, "metrics": 1003, "grpc_inference": 1004, "grpc_management": 1005}
    props = dict(line.split("=", 1) for line in ts.config_properties(ports, tmp_path).splitlines() if line)
    assert props["inference_address"] == "http://127.0.0.1:1001"
    assert props["management_address"] == "http://127.0.0.1:1002"
    assert props["metrics_address"] == "http://127.0.0.1:1003"
    assert (props["grpc_inference_address"], props["grpc_inference_port"]) == ("127.0.0.1", "1004")
    assert (props["grpc_management_address"], props["grpc_management_port"]) == ("127.0.0.1", "1005")
    assert props["disable_token_authorization"] == "true" and props["enable_model_api"] == "true"
    assert props["default_workers_per_model"] == "1" and props["model_store"] == str(tmp_path)


def test_settings_and_capabilities_answer_every_key(models: list) -> None:
    peer = ts.TorchServe()
    budget = Budget("1", 1, 10 * 2**30)
    settings = peer.settings(models, budget)
    assert settings["hosted"] == ", ".join(m.name for m in models)
    assert f"max_batch_delay {ts.MAX_BATCH_DELAY_MS} ms" in settings["batching"]
    from bench.peers.base import CAPABILITIES

    assert set(peer.capabilities()) == set(CAPABILITIES)
