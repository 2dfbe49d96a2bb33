"""Differential testing of ``inferplex worker`` against real NVIDIA Triton.

``serving_pair`` starts both, serving the same models (Triton: Python-backend ``simple`` and
``simple_string``; the worker: the same as ONNX, tests/support/triton_models.py), and the
helpers here send both the same request and compare what came back. Triton's answer is
the reference: nothing here says what either server must answer, only how two answers
are compared (tests/integration/test_triton_conformance*.py hold the cases and the
commented allowlists of deliberate differences).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import tritonclient.http as httpclient

from tests.support.models import ModelArtifact, simple
from tests.support.procs import LoopbackServer
from tests.support.triton import run_triton
from tests.support.triton_models import (
    onnx_simple_string,
    python_simple,
    python_simple_string,
    write_model,
)
from tests.support.worker import run_worker

SERVERS = ("triton", "worker")
DIRECTORY_MODELS = ("simple", "simple_string")
# the worker reports each execution's compute time in-band, for the control plane's
# predictor (README: "inferplex_compute_ns"); clients ignore parameters they don't know
WORKER_ONLY_PARAMETERS = ("inferplex_compute_ns",)


def model_for(server: str, model: str, name: str | None = None) -> ModelArtifact:
    """``simple`` or ``simple_string`` in the form ``server`` runs (Python backend on
    Triton, ONNX on the worker), under ``name``."""
    builders = {("triton", "simple"): python_simple, ("triton", "simple_string"): python_simple_string,
                ("worker", "simple"): simple, ("worker", "simple_string"): onnx_simple_string}
    return builders[(server, model)](name or model)


@contextmanager
def serving_pair(base: Path) -> Iterator[dict[str, LoopbackServer]]:
    """Triton and the worker, each with both models in its repository directory, loaded."""
    with ExitStack() as stack:
        servers: dict[str, LoopbackServer] = {}
        for server in SERVERS:
            repo = base / f"{server}-repo"
            for model in DIRECTORY_MODELS:
                write_model(repo, model_for(server, model))
        servers["triton"] = stack.enter_context(run_triton(base / "triton-repo", base))
        servers["worker"] = stack.enter_context(
            run_worker(base, "--model-repository", str(base / "worker-repo"), "--memory-budget", "2GiB"))
        for server in servers.values():
            with httpclient.InferenceServerClient(server.http_url) as client:
                for model in DIRECTORY_MODELS:
                    client.load_model(model)
        yield servers


@dataclass(frozen=True)
class Exchange:
    """One HTTP answer, as compared: status, the headers clients read, the body (JSON
    parsed; a binary-data answer split into its JSON header and its tensor bytes)."""

    status: int
    content_type: str
    content_encoding: str
    body: Any
    binary: bytes = b""

    @property
    def error(self) -> str:
        return self.body.get("error", "") if isinstance(self.body, dict) else ""


def http_exchange(server: LoopbackServer, method: str, path: str, *, json_body: Any = None,
                  content: bytes | None = None, headers: dict[str, str] | None = None) -> Exchange:
    headers = dict(headers or {})
    if json_body is not None:
        content = json.dumps(json_body).encode()
    headers.setdefault("Accept-Encoding", "identity")
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=30) as client:
        # raw bytes: httpx would undo gzip/deflate itself, and the decoding is under test
        with client.stream(method, path, content=content, headers=headers) as r:
            raw = b"".join(r.iter_raw())
    encoding = r.headers.get("content-encoding", "")
    data = _decompress(raw, encoding) if encoding else raw
    header_length = r.headers.get("inference-header-content-length")
    cut = int(header_length) if header_length is not None else len(data)
    text = data[:cut]
    body: Any = json.loads(text) if text.strip() else None
    return Exchange(r.status_code, r.headers.get("content-type", ""), encoding,
                    without_worker_parameters(body), bytes(data[cut:]))


def _decompress(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    raise AssertionError(f"unexpected Content-Encoding {encoding!r}")


def without_worker_parameters(body: Any) -> Any:
    """An infer response without the worker's own response parameters (see above)."""
    if isinstance(body, dict) and isinstance(body.get("parameters"), dict):
        params = {k: v for k, v in body["parameters"].items() if k not in WORKER_ONLY_PARAMETERS}
        body = {k: v for k, v in body.items() if k != "parameters"} | ({"parameters": params} if params else {})
    return body


def pair_exchange(servers: dict[str, LoopbackServer], method: str, path: str,
                  **kwargs: Any) -> tuple[Exchange, Exchange]:
    """The same request to both: (Triton's answer, the worker's)."""
    return (http_exchange(servers["triton"], method, path, **kwargs),
            http_exchange(servers["worker"], method, path, **kwargs))


def assert_same_error_words(triton: str, worker: str) -> None:
    """The wording clients match on: Triton's whole message starts the worker's, which
    may go on to say what to fix."""
    assert triton, "Triton answered no error message: the case does not test what it says"
    assert worker.startswith(triton), f"\n triton: {triton}\n worker: {worker}"


def stable_rows(rows: list[dict[str, Any]], names: tuple[str, ...] = DIRECTORY_MODELS) -> list[dict[str, Any]]:
    """A repository index restricted to ``names`` (see the repository tests for why)."""
    return [row for row in rows if row["name"] in names]
