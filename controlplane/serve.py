"""``inferplex controlplane``: one control-plane replica, without workers.

Several replicas share one etcd (``--etcd``) and one artifact directory; instances
join by registration (``POST /admin/instances``, or workers registering themselves).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

import uvicorn

from controlplane.settings import Settings

log = logging.getLogger(__name__)


async def _serve(settings: Settings) -> int:
    from controlplane.app import create_app
    from controlplane.services import build_services, close_services
    from controlplane.up import save_new_admin_key

    services = await build_services(settings)
    try:
        key_file = save_new_admin_key(settings, services)
        if key_file is not None:
            print(f"first admin key: {services.new_admin_key}   (shown once; also in {key_file})", flush=True)
        server = uvicorn.Server(uvicorn.Config(create_app(settings, services), host=settings.host,
                                               port=settings.http_port, log_level="warning",
                                               access_log=False, lifespan="on"))
        print(f"inferplex control plane {settings.replica_id}: http://{settings.host}:{settings.http_port} "
              f"grpc {settings.host}:{settings.grpc_port}", flush=True)
        await server.serve()
        return 0
    finally:
        await close_services(services)


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {"data_dir": Path(args.data_dir).resolve(), "host": args.host,
                                    "http_port": args.http_port, "grpc_port": args.grpc_port}
    if args.etcd:
        overrides["store_url"] = args.etcd
    if args.artifact_dir:
        overrides["artifact_dir"] = Path(args.artifact_dir).resolve()
    if args.replica_id:
        overrides["replica_id"] = args.replica_id
    settings = Settings(**overrides)  # type: ignore[arg-type]
    return asyncio.run(_serve(settings))


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("controlplane", help="run one control-plane replica (no workers)")
    p.add_argument("--etcd", default=os.environ.get("INFERPLEX_STORE_URL"),
                   help="etcd://host:port[,host:port]; omitted: embedded store under --data-dir")
    p.add_argument("--data-dir", default=os.environ.get("INFERPLEX_DATA_DIR", "./data"))
    p.add_argument("--artifact-dir", default=None, help="shared model bytes (default DATA_DIR/artifacts)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--replica-id", default=None)
    p.set_defaults(func=run)
