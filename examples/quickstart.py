"""A tenant's client: unmodified tritonclient against the inferplex gateway.

    python examples/quickstart.py --key <tenant key> --model mlp

Only the Authorization header is inferplex-specific; everything else is what a
client of NVIDIA Triton would write.
"""

from __future__ import annotations

import argparse

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--key", required=True, help="tenant API key")
    p.add_argument("--model", default="mlp")
    p.add_argument("--http", default="127.0.0.1:8000")
    p.add_argument("--grpc", default="127.0.0.1:8001")
    args = p.parse_args()

    def auth() -> dict[str, str]:
        # a fresh dict per call: tritonclient.http adds its own headers to the one it is given
        return {"authorization": f"Bearer {args.key}"}

    http = httpclient.InferenceServerClient(args.http)
    meta = http.get_model_metadata(args.model, headers=auth())
    spec = meta["inputs"][0]
    shape = [4 if d == -1 else d for d in spec["shape"]]
    x = np.random.rand(*shape).astype(np.float32)

    inp = httpclient.InferInput(spec["name"], shape, spec["datatype"])
    inp.set_data_from_numpy(x, binary_data=True)
    out = http.infer(args.model, [inp], headers=auth())
    print("HTTP", meta["outputs"][0]["name"], out.as_numpy(meta["outputs"][0]["name"]).shape)

    grpc = grpcclient.InferenceServerClient(args.grpc)
    ginp = grpcclient.InferInput(spec["name"], shape, spec["datatype"])
    ginp.set_data_from_numpy(x)
    gout = grpc.infer(args.model, [ginp], headers=auth())
    print("gRPC", meta["outputs"][0]["name"], gout.as_numpy(meta["outputs"][0]["name"]).shape)


if __name__ == "__main__":
    main()
