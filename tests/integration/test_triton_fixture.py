"""The Triton fixture itself: real tritonserver on loopback serves the Python-backend
``simple`` and ``simple_string`` models, and stopping it leaves no process behind."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.support.models import simple_inputs
from tests.support.triton import TRITON_VERSION, TritonServer
from tests.support.triton_models import python_simple, python_simple_string, write_model


def _string_inputs(a: np.ndarray, b: np.ndarray) -> list[httpclient.InferInput]:
    inputs = []
    for name, x in (("INPUT0", a), ("INPUT1", b)):
        inp = httpclient.InferInput(name, list(x.shape), "BYTES")
        inp.set_data_from_numpy(np.vectorize(lambda v: str(v).encode(), otypes=[object])(x))
        inputs.append(inp)
    return inputs


def test_triton_serves_python_simple_models_and_stops_clean(
        make_triton: Callable[..., TritonServer], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, python_simple())
    write_model(repo, python_simple_string())
    triton = make_triton(repo)
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 3, dtype=np.int32)
    with httpclient.InferenceServerClient(triton.http_url) as http:
        assert http.get_server_metadata()["version"] == TRITON_VERSION
        assert http.get_model_repository_index() == [{"name": "simple"}, {"name": "simple_string"}]
        for name in ("simple", "simple_string"):
            http.load_model(name)
            assert http.is_model_ready(name)
        result = http.infer("simple_string", _string_inputs(a, b))
        assert [int(v) for v in result.as_numpy("OUTPUT0").flat] == list((a + b).flat)
    with grpcclient.InferenceServerClient(triton.grpc_url) as grpc:
        result = grpc.infer("simple", simple_inputs(grpcclient, a, b))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)

    assert triton.proc is not None
    group = triton.proc.popen.pid  # the server leads its process group, stubs included
    triton.stop()
    assert not triton.proc.alive()
    assert not any(_process_group(int(pid)) == group for pid in os.listdir("/proc") if pid.isdigit())


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:  # gone since listed
        return None
