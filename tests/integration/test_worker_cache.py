"""The worker's local artifact cache with a real worker process and the control plane's
real driver (tritonclient): a reload sends no files, a corrupted entry is detected and its
files sent again, a miss answers the documented error, a cache hit profiles as a warm
load; the worker's own folder is removed when it stops, or by the next worker when it was
killed; and NVIDIA Triton, which knows no digest, is sent the files every time."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelfiles.artifacts import ARTIFACT_PARAMETER, NOT_CACHED, files_digest
from placement.driver import LoadSeconds
from placement.instances import InstanceInfo
from placement.triton_driver import TritonDriver
from profiler.offline import profile_model
from tests.support import models
from tests.support.triton import TritonServer
from tests.support.worker import WorkerProcess, run_worker


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scratch")


@pytest.fixture(scope="module")
def cache_worker(tmp_path_factory: pytest.TempPathFactory, scratch: Path) -> Iterator[WorkerProcess]:
    with run_worker(tmp_path_factory.mktemp("logs"), "--memory-budget", "1GiB", "--cache-bytes", "64MiB",
                    "--scratch-dir", str(scratch)) as w:
        yield w


@pytest.fixture
async def driver(cache_worker: WorkerProcess) -> AsyncIterator[TritonDriver]:
    d = TritonDriver(InstanceInfo("w1", cache_worker.http_url, cache_worker.grpc_url, 1 << 30, "cpu"))
    try:
        yield d
    finally:
        await d.close()


def _worker_dir(scratch: Path) -> Path:
    (folder,) = scratch.glob("worker-*")
    return folder


def _mlp(name: str) -> tuple[dict, dict[str, bytes]]:
    """The test MLP with bytes of its own (its name in the ONNX doc string), so that no
    other test's cache entry shares its digest."""
    import onnx

    art = models.mlp_onnx(name)
    model = onnx.load_from_string(art.data)
    model.doc_string = name
    return art.config, {"1/model.onnx": model.SerializeToString()}


def _cache(worker: WorkerProcess) -> dict[str, int]:
    return worker.memory()["cache"]


async def _infers(driver: TritonDriver, name: str) -> None:
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    out = (await driver.infer_arrays(name, {"INPUT0": x})).outputs["OUTPUT0"]
    np.testing.assert_allclose(out, models.mlp_reference(x), rtol=1e-4, atol=1e-5)


async def test_a_reload_sends_no_files_and_still_serves(driver: TritonDriver, cache_worker: WorkerProcess,
                                                        scratch: Path) -> None:
    config, files = _mlp("cache_mlp")
    before = _cache(cache_worker)
    first = await driver.load("cache_mlp", config, files)
    assert isinstance(first, LoadSeconds) and not first.cached
    # while loaded, its files are the model's own copy under the worker's folder, not cached
    assert [p.name.split("-")[0] for p in (_worker_dir(scratch) / "models").iterdir()] == ["cache_mlp"]
    await driver.unload("cache_mlp")
    after_unload = _cache(cache_worker)
    assert after_unload["entries"] == before["entries"] + 1
    assert after_unload["used_bytes"] >= before["used_bytes"] + len(files["1/model.onnx"])
    assert list((_worker_dir(scratch) / "models").iterdir()) == []

    second = await driver.load("cache_mlp", config, files)
    assert second.cached
    now = _cache(cache_worker)
    # the first load asked by digest too, and was a miss; the second was served
    assert now["hits"] == before["hits"] + 1 and now["misses"] == before["misses"] + 1
    assert now["entries"] == before["entries"]  # taken out while in use
    await _infers(driver, "cache_mlp")
    await driver.unload("cache_mlp")


async def test_a_corrupted_entry_is_detected_and_the_files_sent_again(
        driver: TritonDriver, cache_worker: WorkerProcess, scratch: Path) -> None:
    config, files = _mlp("cache_corrupt")
    await driver.load("cache_corrupt", config, files)
    await driver.unload("cache_corrupt")
    entry = _worker_dir(scratch) / "cache" / files_digest(files) / "1" / "model.onnx"
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit's worth: same size, other bytes
    entry.write_bytes(bytes(data))
    before = _cache(cache_worker)

    again = await driver.load("cache_corrupt", config, files)
    assert not again.cached
    now = _cache(cache_worker)
    assert (now["corrupt"], now["misses"], now["hits"]) == (before["corrupt"] + 1, before["misses"] + 1,
                                                             before["hits"])
    assert now["entries"] == before["entries"] - 1  # the bad copy is gone; the files are in use
    await _infers(driver, "cache_corrupt")  # loaded from the files sent, not the bad copy
    await driver.unload("cache_corrupt")
    assert entry.read_bytes() == files["1/model.onnx"]  # the good files are what is kept now


def test_a_load_by_a_digest_the_worker_lacks_answers_not_found(cache_worker: WorkerProcess) -> None:
    art = models.mlp_onnx("cache_absent")
    body = {"parameters": {"config": json.dumps(art.config), ARTIFACT_PARAMETER: "ab" * 32}}
    r = httpx.post(f"http://{cache_worker.http_url}/v2/repository/models/cache_absent/load", json=body, timeout=30)
    assert r.status_code == 404 and r.json()["error"].startswith(NOT_CACHED)
    index = httpx.post(f"http://{cache_worker.http_url}/v2/repository/index", json={}, timeout=5).json()
    assert "cache_absent" not in {row["name"] for row in index}  # a miss leaves no trace
    bad = {"parameters": {ARTIFACT_PARAMETER: "../../etc"}}
    r = httpx.post(f"http://{cache_worker.http_url}/v2/repository/models/cache_absent/load", json=bad, timeout=30)
    assert r.status_code == 400 and "sha256" in r.json()["error"]


def test_a_digest_of_the_wrong_kind_or_not_of_the_files_sent_is_refused(cache_worker: WorkerProcess) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    config, files = models.model_files("cache_mismatch", "mlp")
    with grpcclient.InferenceServerClient(cache_worker.grpc_url) as client:
        with pytest.raises(InferenceServerException, match="must be a string parameter"):
            # tritonclient sends its ``files`` as bytes parameters
            client.load_model("cache_mismatch", config=json.dumps(config),
                              files={**files, ARTIFACT_PARAMETER: b"ab" * 32})
    body = {"parameters": {"config": json.dumps(config), ARTIFACT_PARAMETER: "ab" * 32,
                           **{k: base64.b64encode(v).decode() for k, v in files.items()}}}
    r = httpx.post(f"http://{cache_worker.http_url}/v2/repository/models/cache_mismatch/load", json=body,
                   timeout=30)
    assert r.status_code == 400 and "do not have the artifact digest" in r.json()["error"]


async def test_a_load_the_cache_served_profiles_as_warm(driver: TritonDriver) -> None:
    config, files = _mlp("cache_prof")
    first = await profile_model(driver, "cache_prof", config, files, batch_sizes=[1], warmup=0,
                                min_runs_per_batch=3, runs_per_batch=3, loads=2)
    assert first.load_time_cold_s is not None and first.load_time_cold_s.n == 1
    assert first.load_time_warm_s is not None and first.load_time_warm_s.n == 1
    # the worker kept the files when the profile unloaded the model: no load is cold now
    again = await profile_model(driver, "cache_prof", config, files, batch_sizes=[1], warmup=0,
                                min_runs_per_batch=3, runs_per_batch=3, loads=2)
    assert again.load_time_cold_s is None
    assert again.load_time_warm_s is not None and again.load_time_warm_s.n == 2


def test_a_killed_workers_folder_is_removed_by_the_next_one_and_a_stopped_one_cleans_up(
        tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    with run_worker(tmp_path, "--scratch-dir", str(root)) as killed:
        killed.ensure_model("left_behind", "mlp")
        (dead,) = root.glob("worker-*")
        assert any((dead / "models").iterdir())
        killed.proc.kill()
    assert dead.is_dir()  # SIGKILL: nothing ran to remove it
    with run_worker(tmp_path, "--scratch-dir", str(root)):
        (alive,) = root.glob("worker-*")
        assert alive != dead and not dead.exists()
    assert list(root.iterdir()) == []  # a worker that stops removes its own folder


async def test_triton_is_never_sent_a_digest_and_gets_the_files_each_time(
        make_triton: Callable[..., TritonServer], tmp_path: Path) -> None:
    # a model of the same name in Triton's own repository: a load without files would
    # quietly load that one (here: an ONNX model this Python-backend Triton cannot even run)
    repo = models.write_triton_repo(tmp_path / "repo", {"cache_same": models.simple})
    triton = make_triton(repo, "--strict-readiness=false")
    d = TritonDriver(InstanceInfo("t1", triton.http_url, triton.grpc_url, 1 << 30, "cpu"))
    try:
        config, files = _mlp("cache_same")
        for _ in range(2):
            took = await d.load("cache_same", config, files)
            assert not took.cached
            await _infers(d, "cache_same")  # the MLP sent, not the repository's model
            await d.unload("cache_same")
    finally:
        await d.close()
