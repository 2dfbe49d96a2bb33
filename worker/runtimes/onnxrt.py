"""ONNX Runtime for ``onnxruntime_onnx`` models."""

from __future__ import annotations

import contextlib
import ctypes
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from kserve.alignment import aligned
from kserve.errors import DeadlineExceeded, InvalidArgument
from modelfiles.config import ModelSpec
from worker.runtimes.base import Runtime

_BF16_ONNX = 16  # TensorProto.BFLOAT16


class OnnxRuntime(Runtime):
    def __init__(self, source: bytes, spec: ModelSpec, device: str, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # one executor runs one batch at a time: --threads is the whole parallelism budget
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise InvalidArgument(
                    f"device {device} asked for, but this onnxruntime build has no CUDA provider; "
                    "install onnxruntime-gpu or run with --device cpu"
                )
            index = int(device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(source, sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise InvalidArgument(
                f"failed to load '{spec.name}': onnxruntime could not create a session: {exc}"
            ) from None
        self._ort = ort
        self._name = spec.name
        self._watchdog = _Watchdog()
        self._bf16_in = {t.name for t in spec.inputs if t.datatype == "BF16"}
        # numpy cannot hold a bfloat16 result: BF16 outputs need run_with_ort_values, which
        # takes OrtValues only, and ORT makes no OrtValue from a string array
        self._bf16_out = {t.name for t in spec.outputs if t.datatype == "BF16"}
        self._strings_in = {t.name for t in spec.inputs if t.datatype == "BYTES"}
        self._strings_out = {t.name for t in spec.outputs if t.datatype == "BYTES"}
        if self._bf16_out and self._strings_in:
            raise InvalidArgument(
                f"failed to load '{spec.name}': a model with BF16 outputs "
                f"({', '.join(sorted(self._bf16_out))}) cannot also take BYTES inputs "
                f"({', '.join(sorted(self._strings_in))}) in this worker's ONNX runtime"
            )

    def prepare(self, inputs: dict[str, np.ndarray]) -> Any:
        # ORT runs on the array's own memory: where it starts changes a reduction's bits
        # (kserve.alignment.TENSOR_ALIGNMENT); the sandbox's frames are aligned already
        feed: dict[str, Any] = {name: aligned(array) for name, array in inputs.items()}
        if not self._bf16_in and not self._bf16_out and not self._strings_in:
            return feed
        for name in self._strings_in & inputs.keys():
            feed[name] = _as_text(name, inputs[name])
        for name, array in list(feed.items()):
            if name in self._bf16_in:
                # numpy has no native bfloat16; hand ORT the raw 16-bit words with the ONNX type
                raw = array.view(np.uint16)
                feed[name] = self._ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, _BF16_ONNX)
            elif self._bf16_out:
                # run_with_ort_values takes OrtValues only (session.run takes a mixed feed)
                feed[name] = self._ort.OrtValue.ortvalue_from_numpy(array)
        return feed

    def infer(self, prepared: Any, output_names: list[str], deadline_ns: int | None = None) -> Any:
        if deadline_ns is None:
            return self._run(output_names, prepared, None)
        options = self._ort.RunOptions()
        with self._watchdog.guard(options, deadline_ns):
            try:
                return self._run(output_names, prepared, options)
            except Exception:
                if options.terminate:
                    raise DeadlineExceeded(
                        f"execution of model '{self._name}' was stopped at its deadline; the model "
                        "must finish within its latency target") from None
                raise

    def _run(self, output_names: list[str], feed: Any, options: Any) -> Any:
        if self._bf16_out:
            return self.session.run_with_ort_values(output_names, feed, options)
        return self.session.run(output_names, feed, options)

    def collect(self, raw: Any, output_names: list[str]) -> dict[str, np.ndarray]:
        if self._bf16_out:
            import ml_dtypes

            out = {}
            for name, value in zip(output_names, raw, strict=True):
                if name in self._bf16_out:
                    # OrtValue.numpy() cannot express bfloat16: copy the raw words out
                    shape = value.shape()
                    words = ctypes.string_at(value.data_ptr(), 2 * math.prod(shape))
                    out[name] = np.frombuffer(words, np.uint16).reshape(shape).view(ml_dtypes.bfloat16)
                elif name in self._strings_out:
                    out[name] = _as_bytes(value.numpy())
                else:
                    out[name] = value.numpy()
            return out
        out = dict(zip(output_names, raw, strict=True))
        for name in self._strings_out & out.keys():
            out[name] = _as_bytes(out[name])
        return out

    def close(self) -> None:
        del self.session


class _Watchdog:
    """Sets an execution's RunOptions.terminate at its deadline: ONNX Runtime checks it
    between kernels (a Loop's iterations included) and ends the run with an error, so
    the model stays loaded. One thread for the runtime's life, not one per execution."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._current: tuple[Any, int] | None = None
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, options: Any, deadline_ns: int) -> Iterator[None]:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="ort-watchdog", daemon=True)
                self._thread.start()
            self._current = (options, deadline_ns)
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._current = None

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._current is None:
                    self._cond.wait()
                    continue
                options, deadline_ns = self._current
                left = (deadline_ns - time.monotonic_ns()) / 1e9
                if left <= 0:
                    options.terminate = True
                    self._current = None
                else:
                    self._cond.wait(left)


def _as_text(name: str, array: np.ndarray) -> np.ndarray:
    """ONNX Runtime's Python binding holds string tensors as UTF-8 ``str``; a ``bytes``
    element would be stored as its repr."""
    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype=np.object_)
    for i, item in enumerate(flat):
        try:
            out[i] = item.decode("utf-8") if isinstance(item, bytes) else str(item)
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"BYTES input '{name}' element {i} is not valid UTF-8; ONNX string tensors hold "
                "UTF-8 text"
            ) from None
    return out.reshape(array.shape)


def _as_bytes(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype=np.object_)
    for i, item in enumerate(flat):
        out[i] = item.encode("utf-8") if isinstance(item, str) else item
    return out.reshape(array.shape)
