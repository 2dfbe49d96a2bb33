"""``inferplex demo-model PATH``: write a small ONNX model to try the service with, from
any directory (the quickstart's first model; no torch, no checkout needed).

The model is an MLP, FP32 ``INPUT0`` [batch, 64] -> ``OUTPUT0`` [batch, 10], with a
dynamic batch dimension and fixed, seeded weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

SIZES = (64, 128, 10)
OPSET, IR_VERSION = 17, 8


def mlp_weights(seed: int = 0) -> list[Any]:
    """W1 [64,128], b1 [128], W2 [128,10], b2 [10] (numpy float32), seeded."""
    import numpy as np

    rng = np.random.default_rng(seed)
    i, h, o = SIZES
    return [
        (rng.standard_normal((i, h)) / np.sqrt(i)).astype(np.float32),
        (rng.standard_normal(h) * 0.1).astype(np.float32),
        (rng.standard_normal((h, o)) / np.sqrt(h)).astype(np.float32),
        (rng.standard_normal(o) * 0.1).astype(np.float32),
    ]


def mlp_graph(name: str = "mlp", seed: int = 0) -> Any:
    """The MLP as an ONNX graph (onnx.GraphProto)."""
    from onnx import TensorProto, helper, numpy_helper

    i, _, o = SIZES
    return helper.make_graph(
        [helper.make_node("Gemm", ["INPUT0", "W1", "B1"], ["H"]),
         helper.make_node("Relu", ["H"], ["HR"]),
         helper.make_node("Gemm", ["HR", "W2", "B2"], ["OUTPUT0"])],
        name,
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", i])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", o])],
        initializer=[numpy_helper.from_array(w, k) for k, w in zip(("W1", "B1", "W2", "B2"),
                                                                     mlp_weights(seed), strict=True)],
    )


def demo_model_bytes(seed: int = 0) -> bytes:
    import onnx
    from onnx import helper

    model = helper.make_model(mlp_graph("demo_mlp", seed), opset_imports=[helper.make_opsetid("", OPSET)],
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
