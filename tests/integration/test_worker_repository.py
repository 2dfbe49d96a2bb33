"""Model repository extension: load from files (HTTP base64 / gRPC bytes), unload, index
states, config inference, refusals of bad files; plus statistics after N requests."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support import models
from tests.support.worker import WorkerProcess


def _index(worker: WorkerProcess) -> dict[str, dict]:
    with httpclient.InferenceServerClient(worker.http_url) as client:
        return {row["name"]: row for row in client.get_model_repository_index()}


def _infer_simple(client, module, model: str) -> np.ndarray:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    return client.infer(model, models.simple_inputs(module, a)).as_numpy("OUTPUT0")


def test_load_over_http_infer_unload_and_index_states(worker: WorkerProcess) -> None:
    config, files = models.model_files("repo_http", "simple")
    with httpclient.InferenceServerClient(worker.http_url) as client:
        client.load_model("repo_http", config=json.dumps(config), files=files)
        assert client.is_model_ready("repo_http")
        assert _index(worker)["repo_http"] == {"name": "repo_http", "version": "1", "state": "READY"}
        np.testing.assert_array_equal(_infer_simple(client, httpclient, "repo_http"), 2 * np.arange(16).reshape(1, 16))
        client.unload_model("repo_http")
        assert not client.is_model_ready("repo_http")
        row = _index(worker)["repo_http"]
        assert (row["state"], row["reason"]) == ("UNAVAILABLE", "unloaded")
        # the worker filters server-side when asked for ready models only
        r = httpx.post(f"http://{worker.http_url}/v2/repository/index", json={"ready": True}, timeout=5)
        r.raise_for_status()
        ready_only = {row["name"] for row in r.json()}
        assert "repo_http" not in ready_only and "simple" in ready_only
        with pytest.raises(InferenceServerException, match="Request for unknown model: 'repo_http'"):
            _infer_simple(client, httpclient, "repo_http")


def test_load_over_grpc_with_bytes_and_ready_only_index(worker: WorkerProcess) -> None:
    config, files = models.model_files("repo_grpc", "mlp")
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        client.load_model("repo_grpc", config=json.dumps(config), files=files)
        assert client.is_model_ready("repo_grpc")
        names = [m.name for m in client.get_model_repository_index().models if m.state == "READY"]
        assert "repo_grpc" in names
        client.unload_model("repo_grpc")
        assert not client.is_model_ready("repo_grpc")


def test_load_without_config_infers_it_from_the_onnx_graph(worker: WorkerProcess) -> None:
    _, files = models.model_files("inferred_cnn", "cnn")
    with httpclient.InferenceServerClient(worker.http_url) as client:
        client.load_model("inferred_cnn", files=files)
        config = client.get_model_config("inferred_cnn")
        assert config["platform"] == "onnxruntime_onnx"
        assert config["max_batch_size"] > 0
        assert config["input"] == [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [3, 32, 32]}]
        assert config["output"] == [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [10]}]
        x = np.zeros((2, 3, 32, 32), np.float32)
        inp = httpclient.InferInput("INPUT0", [2, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(x)
        assert client.infer("inferred_cnn", [inp]).as_numpy("OUTPUT0").shape == (2, 10)
        client.unload_model("inferred_cnn")


def test_reload_replaces_the_model_and_version_selection(worker: WorkerProcess) -> None:
    art = models.simple("versioned")
    files = {"file:1/model.onnx": art.data, "file:3/model.onnx": art.data}
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        client.load_model("versioned", config=json.dumps(art.config), files=files)
        # Triton's default version policy: only the latest version is served
        assert client.is_model_ready("versioned", "3") and not client.is_model_ready("versioned", "1")
        with pytest.raises(InferenceServerException, match="Request for unknown model: 'versioned' version 1 is not found"):
            client.infer("versioned", models.simple_inputs(grpcclient, np.zeros((1, 16), np.int32)),
                         model_version="1")
        config = dict(art.config, version_policy={"all": {}})
        client.load_model("versioned", config=json.dumps(config), files=files)
        assert client.is_model_ready("versioned", "1") and client.is_model_ready("versioned", "3")
        client.unload_model("versioned")


BAD_FILES = {
    "corrupt_onnx": (models.corrupt_onnx, "model.onnx", "not a valid ONNX model"),
    "escaping_external_data": (models.onnx_external_data, "model.onnx", "outside the model's folder"),
    "absolute_external_data": (lambda: models.onnx_external_data("/etc/passwd"), "model.onnx",
                               "outside the model's folder"),
    "pickle_pt": (models.pickle_pt, "model.pt", "not a TorchScript archive"),
    "state_dict_pt": (models.state_dict_pt, "model.pt", "torch.save'd state_dict"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_bad_model_file_is_refused_and_the_worker_keeps_serving(worker: WorkerProcess, case: str,
                                                                transport: str) -> None:
    build, filename, expected = BAD_FILES[case]
    name = f"bad_{case}_{transport}"
    config, files = models.bad_model_files(name, build(), filename)
    module = httpclient if transport == "http" else grpcclient
    url = worker.http_url if transport == "http" else worker.grpc_url
    with module.InferenceServerClient(url) as client:
        used_before = worker.memory()["used_bytes"]
        with pytest.raises(InferenceServerException, match=expected) as err:
            client.load_model(name, config=json.dumps(config), files=files)
        if filename == "model.pt":
            assert "torch.jit.save" in str(err.value)  # says how to fix it
        assert not client.is_model_ready(name)
        row = _index(worker)[name]
        assert row["state"] == "UNAVAILABLE" and expected in row["reason"]
        assert worker.memory()["used_bytes"] == used_before  # nothing charged for a failed load
        np.testing.assert_array_equal(_infer_simple(client, module, "simple"), 2 * np.arange(16).reshape(1, 16))


def test_file_parameter_escaping_the_model_folder_is_refused(worker: WorkerProcess) -> None:
    art = models.simple("escape")
    with httpclient.InferenceServerClient(worker.http_url) as client:
        with pytest.raises(InferenceServerException, match="bad file parameter"):
            client.load_model("escape", config=json.dumps(art.config),
                              files={"file:1/../../evil.onnx": art.data})


def test_config_that_disagrees_with_the_graph_is_refused(worker: WorkerProcess) -> None:
    art = models.simple("wrongtype")
    config = json.loads(json.dumps(art.config))
    config["input"][0]["data_type"] = "TYPE_FP32"
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        with pytest.raises(InferenceServerException, match="expects datatype TYPE_FP32 for input 'INPUT0'"):
            client.load_model("wrongtype", config=json.dumps(config), files=art.files())


def test_statistics_after_n_requests_add_up(worker: WorkerProcess) -> None:
    config, files = models.model_files("stats_mlp", "mlp")
    n, batch = 7, 3
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        client.load_model("stats_mlp", config=json.dumps(config), files=files)
        x = np.ones((batch, 64), np.float32)
        for _ in range(n):
            inp = grpcclient.InferInput("INPUT0", [batch, 64], "FP32")
            inp.set_data_from_numpy(x)
            client.infer("stats_mlp", [inp])
        bad = grpcclient.InferInput("INPUT0", [batch, 63], "FP32")
        bad.set_data_from_numpy(np.ones((batch, 63), np.float32))
        with pytest.raises(InferenceServerException, match="unexpected shape"):
            client.infer("stats_mlp", [bad])
        grpc_stats = client.get_inference_statistics("stats_mlp", as_json=True)["model_stats"][0]
    with httpclient.InferenceServerClient(worker.http_url) as client:
        stats = client.get_inference_statistics("stats_mlp")["model_stats"]
        all_stats = client.get_inference_statistics()["model_stats"]
    assert [s["name"] for s in all_stats].count("stats_mlp") == 1
    (s,) = stats
    assert (s["name"], s["version"]) == ("stats_mlp", "1")
    assert s["inference_count"] == n * batch and s["execution_count"] == n
    inf = s["inference_stats"]
    # the refused request never reached the model: Triton does not count it as a failure
    assert inf["success"]["count"] == n and inf["fail"]["count"] == 0
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert inf[phase]["count"] == n and inf[phase]["ns"] > 0
    # success time covers queue and all compute phases of every request
    parts = sum(inf[p]["ns"] for p in ("queue", "compute_input", "compute_infer", "compute_output"))
    assert inf["success"]["ns"] >= parts
    assert s["batch_stats"] == [{"batch_size": batch, **{p: inf[p] for p in
                                                         ("compute_input", "compute_infer", "compute_output")}}]
    assert s["last_inference"] > 0
    assert int(grpc_stats["inference_count"]) == n * batch


def test_statistics_report_each_models_accounted_memory_like_triton(worker: WorkerProcess) -> None:
    art = models.simple("mem_versions")
    config = dict(art.config, version_policy={"all": {}})
    files = {"file:1/model.onnx": art.data, "file:2/model.onnx": art.data}
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        client.load_model("mem_versions", config=json.dumps(config), files=files)
        try:
            grpc_stats = client.get_inference_statistics("mem_versions")  # the protobuf form
            with httpclient.InferenceServerClient(worker.http_url) as http:
                http_stats = http.get_inference_statistics("mem_versions")["model_stats"]
            charged = worker.memory()["models"]["mem_versions"]
        finally:
            client.unload_model("mem_versions")
    assert charged >= 2 * len(art.data)  # at least the file bytes of both versions
    usage = {s["version"]: s["memory_usage"] for s in http_stats}
    assert set(usage) == {"1", "2"}
    assert all(u[0]["type"] == "CPU" and u[0]["id"] == 0 and len(u) == 1 for u in usage.values())
    # the versions' figures add up to what the budget charged the model
    assert sum(u[0]["byte_size"] for u in usage.values()) == charged
    assert sum(m.byte_size for s in grpc_stats.model_stats for m in s.memory_usage) == charged
    assert {m.type for s in grpc_stats.model_stats for m in s.memory_usage} == {"CPU"}


def test_onnx_external_data_sent_with_the_model_is_read_into_its_sandboxed_host(worker: WorkerProcess) -> None:
    """The host reads the version folder before it confines itself and inlines the weights:
    a confined process could not open weights.bin itself."""
    config, _ = models.bad_model_files("external_ok", b"")
    weights = np.array([1, 2, 3, 4], np.float32)
    files = {"file:1/model.onnx": models.onnx_external_data("weights.bin"),
             "file:1/weights.bin": weights.tobytes()}
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        client.load_model("external_ok", config=json.dumps(config), files=files)
        x = grpcclient.InferInput("INPUT0", [2, 4], "FP32")
        x.set_data_from_numpy(np.ones((2, 4), np.float32))
        out = client.infer("external_ok", [x]).as_numpy("OUTPUT0")
        client.unload_model("external_ok")
    np.testing.assert_array_equal(out, np.ones((2, 4), np.float32) + weights)
