"""The MLServer and standalone Triton peers' pieces that need neither server: which models get
loaded, the settings MLServer starts with, the model config and repository Triton is given,
and the benchmark's Triton Python model on a dynamic batch (run here with a stand-in for
the Python backend's ``triton_python_backend_utils``)."""

from __future__ import annotations

import importlib
import json
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from bench.peers import mlserver as ml
from bench.peers import triton as tr
from bench.peers import workload as wl
from bench.peers.base import Budget


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list:
    return wl.build_models(tmp_path_factory.mktemp("models"), copies=1, kinds=("mlp_s", "cnn_s"), cpus=None)


def test_the_first_slots_models_are_loaded_and_the_rest_are_not(models: list) -> None:
    one = ml.resident_bytes(models[0])
    for mod in (ml, tr):
        two = mod.resident_bytes(models[0]) + mod.resident_bytes(models[1])
        assert mod.loaded_models(models, Budget("1", 1, two)) == models[:2]
        assert mod.loaded_models(models, Budget("1", 1, one // 2)) == models[:1]  # at least one
        assert mod.loaded_models(models, Budget("1", 1, 10**12)) == models


def test_mlserver_binds_loopback_loads_nothing_itself_and_batches_each_model(models: list, tmp_path: Path) -> None:
    s = ml.MLServer.server_settings(tmp_path, 1001, 1002, 1003)
    assert s["host"] == "127.0.0.1" and (s["http_port"], s["grpc_port"], s["metrics_port"]) == (1001, 1002, 1003)
    assert s["load_models_at_startup"] is False and s["parallel_workers"] == 1
    assert all(str(s[k]).startswith(str(tmp_path)) for k in ("metrics_dir", "environments_dir",
                                                              "model_repository_root"))
    for m in models:
        ms = ml.MLServer.model_settings(m, Budget("1", 3, 10**9))
        json.dumps(ms)
        assert (ms["name"], ms["max_batch_size"], ms["max_batch_time"]) == (m.name, 8, 0.002)
        assert ms["implementation"] == "mlserver_runtime.PeerModelRuntime"
        assert Path(ms["parameters"]["uri"]) == m.path.resolve()
        assert ms["parameters"]["extra"] == {"threads": 3, "input_name": m.input_name,
                                             "output_name": m.output_name, "input_shape": list(m.input_shape)}


def test_triton_configs_parse_and_ask_for_the_batcher_one_cpu_instance_and_the_file(models: list) -> None:
    for m in models:
        cfg = text_format.Parse(tr.model_config(m, Budget("1", 2, 10**9)), model_config_pb2.ModelConfig())
        assert (cfg.name, cfg.backend, cfg.max_batch_size) == (m.name, "python", 8)
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
        assert not cfg.dynamic_batching.preferred_batch_size
        assert [(g.kind, g.count) for g in cfg.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 1)]
        assert [(i.name, list(i.dims)) for i in cfg.input] == [(m.input_name, list(m.input_shape))]
        assert [(o.name, list(o.dims)) for o in cfg.output] == [(m.output_name, [m.sample_output.shape[1]])]
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        if m.format == "onnx" and tr.ONNX_MODEL == "inferplex-adapter":
            assert params == {"inferplex_onnx_file": "model.onnx", "inferplex_threads": "2"}
        elif m.format == "onnx":  # the default: one runtime call per dynamic batch, as a native backend
            assert params == {"peer_model_file": "model.onnx", "peer_threads": "2"}
        else:
            assert params == {"peer_model_file": "model.pt", "peer_threads": "2"}


def test_triton_repository_holds_each_model_with_its_python_model(models: list, tmp_path: Path) -> None:
    tr.write_repository(tmp_path / "repo", models, Budget("1", 1, 10**9))
    for m in models:
        version = tmp_path / "repo" / m.name / "1"
        assert (version / m.path.name).resolve() == m.path.resolve()
        want = tr.ONNX_ADAPTER if m.format == "onnx" and tr.ONNX_MODEL == "inferplex-adapter" else tr.PEER_MODEL
        assert (version / "model.py").read_bytes() == want.read_bytes()
        assert (tmp_path / "repo" / m.name / "config.pbtxt").exists()


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _Response:
    def __init__(self, output_tensors: list, error: object = None) -> None:
        self.output_tensors, self.error = output_tensors, error


@pytest.fixture
def triton_model(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """bench/peers/triton_model.py with a stand-in for the stub's triton_python_backend_utils."""
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor = _Tensor
    pb.InferenceResponse = _Response
    pb.TritonError = str
    pb.get_input_tensor_by_name = lambda request, name: request.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    monkeypatch.delitem(sys.modules, "bench.peers.triton_model", raising=False)
    return importlib.import_module("bench.peers.triton_model")


def test_the_python_model_runs_a_batch_in_one_call_and_answers_each_request_its_rows(
        triton_model: types.ModuleType, models: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tr, "ONNX_MODEL", "peer")  # ONNX through this model too
    tr.write_repository(tmp_path / "repo", models, Budget("1", 1, 10**9))
    for m in models:  # both formats, both input ranks
        cfg = text_format.Parse((tmp_path / "repo" / m.name / "config.pbtxt").read_text(),
                                model_config_pb2.ModelConfig())
        model = triton_model.TritonPythonModel()
        model.initialize({"model_config": json.dumps(json_format.MessageToDict(cfg, preserving_proto_field_name=True)),
                          "model_repository": str(tmp_path / "repo" / m.name), "model_version": "1"})
        calls: list[int] = []
        model.run = lambda x, run=model.run, calls=calls: calls.append(len(x)) or run(x)
        x = m.sample_input
        out = model.execute([{m.input_name: _Tensor(m.input_name, x)},
                             {m.input_name: _Tensor(m.input_name, np.concatenate([x * 0.5, x]))}])
        assert calls == [3] and [r.error for r in out] == [None, None]
        first, second = (r.output_tensors[0].array for r in out)
        assert first.shape == m.sample_output.shape and second.shape == (2, m.sample_output.shape[1])
        np.testing.assert_allclose(first, m.sample_output, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(second[1:], m.sample_output, rtol=1e-3, atol=1e-4)
        assert not np.allclose(second[:1], m.sample_output, rtol=1e-3, atol=1e-4)


def test_a_failed_batch_tells_every_request_in_it(triton_model: types.ModuleType, models: list,
                                                  tmp_path: Path) -> None:
    m = next(x for x in models if x.format == "torchscript")
    tr.write_repository(tmp_path / "repo", [m], Budget("1", 1, 10**9))
    model = triton_model.TritonPythonModel()
    model.initialize({"model_config": json.dumps({"input": [{"name": m.input_name}],
                                                  "output": [{"name": m.output_name}]}),
                      "model_repository": str(tmp_path / "repo" / m.name), "model_version": "1"})
    bad = replace(m, input_shape=(7,))
    out = model.execute([{m.input_name: _Tensor(m.input_name, np.zeros((1, *bad.input_shape), np.float32))}] * 2)
    assert len(out) == 2 and all(r.output_tensors == [] and r.error.startswith("the model failed:") for r in out)
