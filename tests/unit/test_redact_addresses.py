"""Only real addresses become "an internal address": a tensor's dims, a slice, a version or a
model file's line in a tenant-facing message are shown as they are (issue 11)."""

from __future__ import annotations

import pytest

from controlplane.redact import AN_ADDRESS, public_text


@pytest.mark.parametrize("message", [
    "input 'x': declared dims [32] but the model computes [64]; declare [64] in the config",
    "output 'y' has shape [1.5] [0] [3.0] [1:3]",
    "tags [cafe] [add] [dead] are hex-looking words",
    "expected dims [4] (max_batch_size 8)",
    "opset 999.1.1.1 is not an IP address",
    "Node (Gemm_0) failed in mlp.onnx:3 and model.pbtxt:12 and kernel.h:560",
])
def test_dims_slices_versions_and_file_lines_are_not_addresses(message: str) -> None:
    assert public_text(message, "acme") == message


@pytest.mark.parametrize(("message", "public"), [
    ("connect to [::1]:8001 refused", f"connect to {AN_ADDRESS} refused"),
    ("instance at [2001:db8::7] is gone", f"instance at {AN_ADDRESS} is gone"),
    ("link-local [fe80::1%eth0]:80 down", f"link-local {AN_ADDRESS} down"),
    ("mapped [::ffff:10.0.0.1]:5 down", f"mapped {AN_ADDRESS} down"),
    ("ConnectError('10.0.0.5:8000')", f"ConnectError('{AN_ADDRESS}')"),
    ("etcd 192.168.1.20 timed out", f"etcd {AN_ADDRESS} timed out"),
    ("triton.internal:8001 and worker.svc.cluster.local:8001 refused",
     f"{AN_ADDRESS} and {AN_ADDRESS} refused"),
    ("host example.com:80 and graph.cc:120 (a real top-level domain, kept hidden)",
     f"host {AN_ADDRESS} and {AN_ADDRESS} (a real top-level domain, kept hidden)"),
    ("localhost:2379 did not answer", f"{AN_ADDRESS} did not answer"),
    ("probe http://10.0.0.5:8000/v2/models/x failed", f"probe {AN_ADDRESS} failed"),
])
def test_real_addresses_are_still_hidden(message: str, public: str) -> None:
    assert public_text(message, "acme") == public


def test_dims_next_to_an_address_keep_their_numbers() -> None:
    msg = "instance 10.0.0.5:8000 answered: input 'x' expects [64], got [32]"
    assert public_text(msg, "acme") == f"instance {AN_ADDRESS} answered: input 'x' expects [64], got [32]"
