"""``inferplex demo-model PATH``: write a small ONNX model to try the service with, from
any directory (the quickstart's first model; no torch, no checkout needed).

The model is an MLP, FP32 ``INPUT0`` [batch, 64] -> ``OUTPUT0`` [batch, 10], with a
dynamic batch dimension and fixed, seeded weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SIZES = (64, 128, 10)
OPSET, IR_VERSION = 17, 8


def demo_model_bytes(seed: int = 0) -> bytes:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    i, h, o = SIZES
    weights = {
        "W1": (rng.standard_normal((i, h)) / np.sqrt(i)).astype(np.float32),
        "B1": (rng.standard_normal(h) * 0.1).astype(np.float32),
        "W2": (rng.standard_normal((h, o)) / np.sqrt(h)).astype(np.float32),
        "B2": (rng.standard_normal(o) * 0.1).astype(np.float32),
    }
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["INPUT0", "W1", "B1"], ["H"]),
         helper.make_node("Relu", ["H"], ["HR"]),
         helper.make_node("Gemm", ["HR", "W2", "B2"], ["OUTPUT0"])],
        "demo_mlp",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", i])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", o])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="inferplex-demo")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    path.write_bytes(demo_model_bytes())
    print(f"wrote {path}: ONNX MLP, input INPUT0 FP32 [batch, 64], output OUTPUT0 FP32 [batch, 10]")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("demo-model", help="write a small ONNX model to try inferplex with",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="where to write it, e.g. mlp.onnx")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=run)
