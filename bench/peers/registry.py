"""Every system the peers benchmark knows, by name: ``module:class``, imported when asked
(an adapter's module imports nothing of its peer: the peer lives in its own venv)."""

from __future__ import annotations

import importlib

from bench.peers.base import Peer

SYSTEMS: dict[str, str] = {
    "inferplex": "bench.peers.inferplex:Inferplex",
    "ray": "bench.peers.ray_serve:RayServe",
    # Ray's documented throughput-optimised mode, requests straight to the replica's port
    "ray_direct": "bench.peers.ray_serve:RayServeDirect",
    "torchserve": "bench.peers.torchserve:TorchServe",
    "mlserver": "bench.peers.mlserver:MLServer",
    "triton": "bench.peers.triton:StandaloneTriton",
}


def peer(name: str) -> Peer:
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}: one of {', '.join(SYSTEMS)}")
    module, cls = SYSTEMS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
