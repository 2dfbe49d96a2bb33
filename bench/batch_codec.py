"""What merging and splitting a batch costs the gateway (issue 9: "a batch is one inference").

    python -m bench.batch_codec

Times, for N callers of the MLP shape (FP32 [1, 64] in, [1, 64] out, as tritonclient
sends them), the gateway's side of one batch: reading each request on arrival
(``read_http``/``read_grpc``), building the merged request, and splitting the instance's
answer back into one answer per caller (``split_http``/``split_grpc``). The instance's
own work (decode, model, encode of the merged request) is outside the timing.
Writes bench/results/batch_codec.md.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.grpc._utils import _get_inference_request

from kserve import grpc_codec, http_codec
from kserve.batching_grpc import merge_grpc, read_grpc, split_grpc
from kserve.batching_http import HEADER_LENGTH, merge_http, read_http, split_http
from kserve.tensors import InferResponse, Tensor

RESULTS = Path(__file__).resolve().parent / "results"
WIDTH = 64


def _best_us(fn: Callable[[], object], calls: int) -> float:
    """Microseconds per call, best of 5 rounds (the machine is shared)."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def _answer(batch: np.ndarray) -> InferResponse:
    out = Tensor("OUTPUT", "FP32", list(batch.shape), batch * 2)
    return InferResponse("m", "1", "batch", [out], {"inferplex_compute_ns": 1234})


def http_case(callers: int, binary: bool, calls: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(callers):
        inp = thttp.InferInput("INPUT", [1, WIDTH], "FP32")
        inp.set_data_from_numpy(rng.random((1, WIDTH), dtype=np.float32), binary_data=binary)
        out = thttp.InferRequestedOutput("OUTPUT", binary_data=binary)
        bodies.append(thttp.InferenceServerClient.generate_request_body([inp], outputs=[out]))
    reqs = [read_http(b, h) for b, h in bodies]
    assert all(r is not None for r in reqs)
    body, headers = merge_http(reqs)
    hlen = int(headers[HEADER_LENGTH])
    merged = http_codec.decode_infer_request(body, hlen, "m", "1")
    resp, resp_hlen = http_codec.encode_infer_response(_answer(merged.inputs[0].data), merged.outputs,
                                                       merged.binary_data_output)
    return {
        "read (per caller)": _best_us(lambda: read_http(*bodies[0]), calls),
        "merge": _best_us(lambda: merge_http(reqs), calls),
        "split": _best_us(lambda: split_http(resp, resp_hlen, reqs), calls),
    }


def grpc_case(callers: int, calls: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    msgs = []
    for _ in range(callers):
        inp = tgrpc.InferInput("INPUT", [1, WIDTH], "FP32")
        inp.set_data_from_numpy(rng.random((1, WIDTH), dtype=np.float32))
        msgs.append(_get_inference_request("m", [inp], "1", "", [tgrpc.InferRequestedOutput("OUTPUT")],
                                           0, False, False, 0, None, None))
    reqs = [read_grpc(m) for m in msgs]
    assert all(r is not None for r in reqs)
    merged = grpc_codec.decode_infer_request(merge_grpc(reqs))
    resp = grpc_codec.encode_infer_response(_answer(merged.inputs[0].data))
    return {
        "read (per caller)": _best_us(lambda: read_grpc(msgs[0]), calls),
        "merge": _best_us(lambda: merge_grpc(reqs), calls),
        "split": _best_us(lambda: split_grpc(resp, reqs), calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    cases = {
        "HTTP binary": http_case(args.callers, True, args.calls),
        "HTTP JSON": http_case(args.callers, False, args.calls),
        "gRPC raw": grpc_case(args.callers, args.calls),
    }
    n = args.callers
    lines = [
        "# Batch codec cost",
        "",
        f"Command: `python -m bench.batch_codec --callers {n} --calls {args.calls}` — "
        f"{platform.machine()}, {platform.python_version()}; {n} callers of FP32 [1, {WIDTH}] "
        f"(OUTPUT [1, {WIDTH}]), best of 5 rounds of {args.calls} calls.",
        "",
        f"| form | read, per caller (µs) | merge {n} (µs) | split {n} (µs) | merge + split (µs) "
        f"| all, per caller (µs) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for form, t in cases.items():
        both = t["merge"] + t["split"]
        per = t["read (per caller)"] + both / n
        lines.append(f"| {form} | {t['read (per caller)']:.1f} | {t['merge']:.1f} | {t['split']:.1f} "
                     f"| {both:.1f} | {per:.1f} |")
    lines += ["", "The instance's own decode, execution and encode of the merged request are not "
              "included; they replace N executions by one."]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch_codec.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
