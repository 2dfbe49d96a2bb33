"""The Ray peer's runtime code (loading, decoding, one call per batch, the eviction count) and
the adapter's config, without Ray: the app's pieces run in the bench's venv here."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from bench.peers import ray_app, ray_serve
from bench.peers import workload as wl
from bench.peers.base import CAPABILITIES, Budget


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list:
    return wl.build_models(tmp_path_factory.mktemp("models"), copies=1, kinds=("mlp_s", "cnn_s"), cpus=None)


def spec(m) -> dict:
    return {"path": str(m.path), "format": m.format, "input_shape": list(m.input_shape)}


def test_a_batch_of_requests_is_one_call_and_each_gets_its_own_rows(models: list) -> None:
    for m in models:
        model = ray_app.load_model(spec(m), threads=1)
        x = m.sample_input
        xs = [x, np.concatenate([x * 0.5, x]), x * 2.0]
        calls = []

        def counted(batch: np.ndarray, model=model, calls=calls) -> np.ndarray:
            calls.append(len(batch))
            return model(batch)

        out = ray_app.run_batch(counted, xs)
        assert calls == [4], m.name
        assert [len(y) for y in out] == [1, 2, 1]
        np.testing.assert_allclose(out[0], m.sample_output, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(out[1][1:], m.sample_output, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(out[2], model(x * 2.0), rtol=1e-5, atol=1e-6)


def test_a_body_is_read_as_float32_rows_of_the_input_shape_and_a_wrong_size_is_refused(models: list) -> None:
    m = next(m for m in models if m.kind == "cnn_s")
    two = np.concatenate([m.sample_input, m.sample_input])
    got = ray_app.decode(two.astype("<f4").tobytes(), list(m.input_shape))
    assert got.shape == (2, *m.input_shape)
    np.testing.assert_array_equal(got, two)
    for bad in (b"", two.tobytes()[:-4]):
        with pytest.raises(ValueError, match=r"not a float32 batch of shape \[-1, 3, 64, 64\]"):
            ray_app.decode(bad, list(m.input_shape))


def test_an_evicted_model_is_counted_once_though_its_destructor_runs_twice(models: list) -> None:
    evicted = []
    model = ray_app.load_model(spec(models[0]), 1, lambda: evicted.append(1))
    model.__del__()  # what Ray's multiplexer does on eviction
    assert evicted == [1]
    del model
    gc.collect()  # then the collector
    assert evicted == [1]


def test_slots_batching_and_queues_come_from_the_budget_and_the_mode(models: list) -> None:
    budget = Budget("1", 1, 3 * ray_serve.resident_bytes(models[0]))
    peer = ray_serve.RayServe()
    config = peer.app_config(models, budget, 8123)
    mean = sum(ray_serve.resident_bytes(m) for m in models) / len(models)
    assert config["slots"] == int(budget.model_memory_bytes // mean)
    assert config["batch"] == {"max_batch_size": 8, "wait_s": 0.002}
    assert config["max_ongoing_requests"] > 5  # Ray's default 5 stalls its router
    assert config["http_port"] == 8123 and config["replica_num_cpus"] == 1.0
    assert set(config["models"]) == {m.name for m in models}
    assert config["models"][models[0].name]["input_shape"] == list(models[0].input_shape)
    assert ray_serve.RayServe(batching=False).app_config(models, budget, 1)["batch"] is None
    assert "unbatched" in ray_serve.RayServe(batching=False).label


def test_a_taskset_list_counts_its_cpus() -> None:
    assert [ray_serve.cpu_count(c) for c in ("1", "0-3", "1,3", "0-1,4")] == [1, 4, 2, 3]


def test_both_modes_answer_every_capability_and_name_their_protocol(models: list) -> None:
    budget = Budget("1", 1, 100 * 2**20)
    for peer in (ray_serve.RayServe(), ray_serve.RayServeDirect()):
        assert set(peer.capabilities()) == set(CAPABILITIES)
        assert peer.needs_netns
    assert "proxy" in ray_serve.RayServe().settings(models, budget)["protocol"]
    assert "direct-ingress" in ray_serve.RayServeDirect().settings(models, budget)["protocol"]
    assert ray_serve.RayServeDirect().name == "ray_direct"


def test_the_app_file_sits_beside_the_adapter() -> None:
    assert ray_serve.APP == Path(ray_app.__file__)
