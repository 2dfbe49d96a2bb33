"""Workers started with their own flags: a small memory budget, and a Triton-layout
model repository directory in explicit and none control modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support import models
from tests.support.worker import run_worker


def test_budget_refuses_a_load_that_does_not_fit_and_unload_frees_it(tmp_path: Path) -> None:
    # A model whose 16 MiB of weights dominate its memory; the budget leaves room for the
    # measured charge of one and half the file bytes of a second, so the second cannot fit
    # (a model is always charged at least its file bytes) whatever the allocator does.
    config, files = models.model_files("m1", "wide")
    file_bytes = sum(len(b) for b in files.values())
    with run_worker(tmp_path, "--memory-budget", "2GiB") as probe:
        with httpclient.InferenceServerClient(probe.http_url) as client:
            client.load_model("m1", config=json.dumps(config), files=files)
        charge = probe.memory()["models"]["m1"]
    assert charge >= file_bytes
    budget = charge + file_bytes // 2
    with run_worker(tmp_path, "--memory-budget", str(budget)) as worker:
        with grpcclient.InferenceServerClient(worker.grpc_url) as client:
            client.load_model("m1", config=json.dumps(config), files=files)
            used = worker.memory()["used_bytes"]
            assert file_bytes <= used <= budget
            config2, files2 = models.model_files("m2", "wide")
            with pytest.raises(InferenceServerException) as err:
                client.load_model("m2", config=json.dumps(config2), files=files2)
            message = str(err.value)
            assert "insufficient memory budget to load 'm2': needs " in message
            assert f"{budget - used} free of {budget} budget" in message
            assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
            assert client.is_model_ready("m1") and not client.is_model_ready("m2")  # never evicts
            assert worker.memory()["used_bytes"] == used
            client.unload_model("m1")
            assert worker.memory()["used_bytes"] == 0
            client.load_model("m2", config=json.dumps(config2), files=files2)
            assert client.is_model_ready("m2")
        # the refusal is visible over HTTP as well, with the same wording
        with httpclient.InferenceServerClient(worker.http_url) as client:
            with pytest.raises(InferenceServerException, match="insufficient memory budget to load 'm1'"):
                client.load_model("m1", config=json.dumps(config), files=files)


def test_a_file_larger_than_the_budget_is_refused_before_loading(tmp_path: Path) -> None:
    with run_worker(tmp_path, "--memory-budget", "1000") as worker:
        config, files = models.model_files("cnn", "cnn")
        with httpclient.InferenceServerClient(worker.http_url) as client:
            with pytest.raises(InferenceServerException, match=r"needs \d+ bytes, 1000 free of 1000 budget"):
                client.load_model("cnn", config=json.dumps(config), files=files)
            row = {r["name"]: r for r in client.get_model_repository_index()}["cnn"]
            assert row["state"] == "UNAVAILABLE" and "insufficient memory budget" in row["reason"]


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    models.write_triton_repo(root, {"simple": models.simple, "mlp_pt": models.mlp_torchscript,
                                    "noconfig": models.mlp_onnx}, omit_config=["noconfig"])
    return root


def test_explicit_mode_loads_by_name_from_a_triton_repository(tmp_path: Path, triton_repo: Path) -> None:
    with run_worker(tmp_path, "--model-repository", str(triton_repo), "--model-control-mode", "explicit",
                    "--load-model", "simple") as worker:
        with httpclient.InferenceServerClient(worker.http_url) as client:
            index = {r["name"]: r for r in client.get_model_repository_index()}
            assert index["simple"]["state"] == "READY"
            assert index["mlp_pt"] == {"name": "mlp_pt"}  # present in the directory, never loaded
            client.load_model("mlp_pt")  # by name alone: from the directory, config.pbtxt included
            client.load_model("noconfig")  # no config.pbtxt: inferred from the ONNX graph
            assert client.get_model_config("noconfig")["input"][0]["dims"] == [64]
            x = np.ones((2, 64), np.float32)
            inp = httpclient.InferInput("INPUT__0", [2, 64], "FP32")
            inp.set_data_from_numpy(x)
            out = client.infer("mlp_pt", [inp]).as_numpy("OUTPUT__0")
            np.testing.assert_allclose(out, models.mlp_reference(x), rtol=1e-4, atol=1e-5)
            with pytest.raises(InferenceServerException, match="no model named 'ghost'"):
                client.load_model("ghost")
            client.unload_model("simple")
            assert {r["name"]: r for r in client.get_model_repository_index()}["simple"]["state"] == "UNAVAILABLE"


def test_none_mode_loads_everything_and_refuses_repository_control(tmp_path: Path, triton_repo: Path) -> None:
    with run_worker(tmp_path, "--model-repository", str(triton_repo), "--model-control-mode", "none") as worker:
        with grpcclient.InferenceServerClient(worker.grpc_url) as client:
            states = {m.name: m.state for m in client.get_model_repository_index().models}
            assert states == {"simple": "READY", "mlp_pt": "READY", "noconfig": "READY"}
            with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed"):
                client.unload_model("simple")
            assert client.is_model_ready("simple")
