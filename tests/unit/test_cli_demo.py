"""`inferplex demo-model PATH` writes a runnable ONNX model from any directory (issue 11)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from controlplane.cli import main


def test_demo_model_writes_a_runnable_onnx_mlp_outside_the_checkout(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo-model", "mlp.onnx"]) == 0
    sess = ort.InferenceSession(str(tmp_path / "mlp.onnx"), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"INPUT0": np.ones((3, 64), np.float32)})
    assert out.shape == (3, 10)
    assert main(["demo-model", "mlp.onnx"]) == 2  # not overwritten without --force
    assert main(["demo-model", "mlp.onnx", "--force"]) == 0
