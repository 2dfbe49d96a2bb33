"""Bounded execution on a real worker: a model loaded straight into the worker (no upload
check) whose execution runs past its request's deadline is stopped, its caller told so,
the worker goes on serving another tenant's model, the runaway model is restarted, and
after three stops in a row it is quarantined. Every model host runs confined."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support import hostile_models, models
from tests.support.procs import wait_until
from tests.support.worker import TEST_CREDENTIAL, WorkerProcess, run_worker

LOOP = "acme__loop"  # ONNX: the runtime stops itself at the deadline (RunOptions.terminate)
LOOP_PT = "acme__loop_pt"  # TorchScript: cannot be interrupted, its host is killed and restarted
OTHER = "globex__simple"
# per model: (trips input, its datatype, state input, output)
IO = {LOOP: ("TRIPS", "INPUT0", "OUTPUT0"), LOOP_PT: ("INPUT__0", "INPUT__1", "OUTPUT__0")}


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    root: Path = tmp_path_factory.mktemp("bounded")
    # a wide kill margin: ONNX Runtime's own stop at the deadline must win even on a loaded
    # CI machine, so the test sees which path stopped which model
    with run_worker(root, "--memory-budget", "4GiB", "--max-exec-time", "20", "--exec-margin-ms", "300",
                    credential=TEST_CREDENTIAL) as w:
        with grpcclient.InferenceServerClient(w.grpc_url) as client:
            for name, hostile in ((LOOP, hostile_models.runaway_loop(LOOP)),
                                  (LOOP_PT, hostile_models.runaway_torchscript(LOOP_PT))):
                client.load_model(name, config=json.dumps(hostile.artifact.config),
                                  files=hostile.artifact.files(), headers=w.grpc_headers())
        w.ensure_model(OTHER, "simple")
        yield w


def _loop_inputs(module, trips: int, model: str = LOOP) -> list:
    trips_name, state_name, _ = IO[model]
    m = module.InferInput(trips_name, [1], "INT64")
    m.set_data_from_numpy(np.array([trips], np.int64))
    x = module.InferInput(state_name, [1, 64], "FP32")
    x.set_data_from_numpy(np.full((1, 64), 0.5, np.float32))
    return [m, x]


def _infer_loop_grpc(w: WorkerProcess, trips: int, timeout_us: int | None = None, model: str = LOOP):
    with grpcclient.InferenceServerClient(w.grpc_url) as client:
        return client.infer(model, _loop_inputs(grpcclient, trips, model), timeout=timeout_us,
                            headers=w.grpc_headers())


def _infer_other(w: WorkerProcess) -> np.ndarray:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    with grpcclient.InferenceServerClient(w.grpc_url) as client:
        result = client.infer(OTHER, models.simple_inputs(grpcclient, a), headers=w.grpc_headers())
    return result.as_numpy("OUTPUT0")


def _index_row(w: WorkerProcess, name: str) -> dict:
    with httpclient.InferenceServerClient(w.http_url) as client:
        rows = client.get_model_repository_index(headers=w.http_headers())
    return next(r for r in rows if r["name"] == name)


def _serving_again(w: WorkerProcess, model: str = LOOP) -> bool:
    return _index_row(w, model).get("state") == "READY"


@pytest.mark.parametrize("model", [LOOP, LOOP_PT])
def test_a_normal_execution_of_the_loop_model_answers(worker: WorkerProcess, model: str) -> None:
    out = _infer_loop_grpc(worker, 3, model=model).as_numpy(IO[model][2])
    assert out.shape == (1, 64) and np.all(np.isfinite(out))


@pytest.mark.parametrize("model", [LOOP, LOOP_PT])
def test_a_runaway_execution_is_stopped_at_its_deadline_and_others_keep_being_served(
        worker: WorkerProcess, model: str) -> None:
    other_results: list[np.ndarray] = []
    hosts_before = set(_host_pids(worker.proc.popen.pid))
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as caught:
        blocker = threading.Thread(target=lambda: other_results.append(_infer_other(worker)))
        timer = threading.Timer(0.1, blocker.start)  # the other tenant arrives mid-runaway
        timer.start()
        _infer_loop_grpc(worker, 10**12, timeout_us=400_000, model=model)
    elapsed = time.monotonic() - started
    timer.join()
    blocker.join(30)
    assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert "stopped at its deadline" in caught.value.message()
    # generous for a shared CI machine; the tight figure is in bench/sandbox_overhead.py
    assert elapsed < 0.4 + 0.3 + 2.0
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    assert len(other_results) == 1 and np.array_equal(other_results[0], a + a)
    wait_until(lambda: _serving_again(worker, model), 60, "the stopped model serving again")
    assert _infer_loop_grpc(worker, 2, model=model).as_numpy(IO[model][2]).shape == (1, 64)
    replaced = hosts_before - set(_host_pids(worker.proc.popen.pid))
    # ONNX Runtime ends the run itself and keeps the model; libtorch's host had to be killed
    assert len(replaced) == (0 if model == LOOP else 1), replaced


def test_the_http_deadline_header_bounds_an_execution_too(worker: WorkerProcess) -> None:
    with httpclient.InferenceServerClient(worker.http_url, network_timeout=60) as client:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(LOOP, _loop_inputs(httpclient, 10**12),
                         headers={**worker.http_headers(), "inferplex-timeout-ms": "300"})
    assert caught.value.status() == "504"
    wait_until(lambda: _serving_again(worker), 60, "the stopped model restarted")


def test_model_hosts_run_confined(worker: WorkerProcess) -> None:
    hosts = _host_pids(worker.proc.popen.pid)
    assert len(hosts) >= 2  # the loop model and the other tenant's model
    for pid in hosts:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        assert status["Seccomp"].strip() == "2", pid
        assert status["NoNewPrivs"].strip() == "1", pid


def test_a_model_stopped_three_times_in_a_row_is_quarantined(worker: WorkerProcess) -> None:
    wait_until(lambda: _serving_again(worker), 60, "the stopped model restarted")
    _infer_loop_grpc(worker, 1)  # a success: the stops before it no longer count
    for attempt in range(3):
        wait_until(lambda: _serving_again(worker), 60, "the stopped model restarted")
        with pytest.raises(InferenceServerException) as caught:
            _infer_loop_grpc(worker, 10**12, timeout_us=200_000)
        assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED", attempt
    row = _index_row(worker, LOOP)
    assert row["state"] == "UNAVAILABLE" and "quarantined" in row["reason"], row
    with pytest.raises(InferenceServerException) as caught:
        _infer_loop_grpc(worker, 1)
    assert caught.value.status() == "StatusCode.UNAVAILABLE"
    assert "quarantined" in caught.value.message()
    assert _infer_other(worker).shape == (1, 16)  # the other tenant never noticed


def _host_pids(worker_pid: int) -> list[int]:
    """The worker's grandchildren: the zygote's forked model hosts."""
    def children(pid: int) -> list[int]:
        out: list[int] = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(p) for p in (task / "children").read_text().split()]
        return out

    def alive(pid: int) -> bool:  # a killed host stays a zombie until the zygote reaps it
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
        except OSError:
            return False

    return [host for zygote in children(worker_pid) for host in children(zygote) if alive(host)]


def _hostile_corpus(victim: str) -> list[hostile_models.Hostile]:
    return [h for h in (*hostile_models.torchscript_corpus(victim), *hostile_models.onnx_corpus())
            if h.refusal is not None]


def test_hostile_models_loaded_straight_into_the_worker_are_refused_at_load(
        worker: WorkerProcess, tmp_path: Path) -> None:
    """No upload check in between: the worker verifies each program in its host, which
    is confined before it reads the model, and nothing of the refused model stays."""
    victim = tmp_path / "admin.key"
    victim.write_bytes(b"K" * hostile_models.SIZE)
    with grpcclient.InferenceServerClient(worker.grpc_url) as client:
        for hostile in _hostile_corpus(str(victim)):
            name = f"evil__{hostile.artifact.config['name']}"
            with pytest.raises(InferenceServerException) as caught:
                client.load_model(name, config=json.dumps({**hostile.artifact.config, "name": name}),
                                  files=hostile.artifact.files(), headers=worker.grpc_headers())
            assert hostile.refusal in caught.value.message(), (name, caught.value.message())
            assert not client.is_model_ready(name, headers=worker.grpc_headers())
    assert victim.read_bytes() == b"K" * hostile_models.SIZE
    assert _infer_other(worker).shape == (1, 16)
