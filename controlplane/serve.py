"""``inferplex controlplane``: one control-plane replica, without workers.

Several replicas share one etcd (``--etcd``) and one artifact directory; instances
join by registration (``POST /admin/instances``, or workers registering themselves).
Every option left out comes from the ``INFERPLEX_*`` environment (see Settings), then
from Settings' defaults.
"""

from __future__ import annotations

import argparse
import asyncio

from controlplane.settings import Settings
from controlplane.up import event_loop_factory, http_server, save_new_admin_key, settings_from_args


async def _serve(settings: Settings) -> int:
    from controlplane.app import create_app
    from controlplane.services import build_services, close_services

    services = await build_services(settings)
    try:
        key_file = save_new_admin_key(settings, services)
        if key_file is not None:
            print(f"first admin key: {services.new_admin_key}   (shown once; also in {key_file})", flush=True)
        server = http_server(create_app(settings, services), settings.host, settings.http_port, settings)
        print(f"inferplex control plane {settings.replica_id}: http://{settings.host}:{settings.http_port} "
              f"grpc {settings.host}:{settings.grpc_port}", flush=True)
        await server.serve()
        return 0
    finally:
        await close_services(services)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(_serve(settings))


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("controlplane", help="run one control-plane replica (no workers)")
    p.add_argument("--etcd", default=None,
                   help="etcd://host:port[,host:port] (env INFERPLEX_STORE_URL); omitted: embedded "
                   "store under the data dir")
    p.add_argument("--data-dir", default=None, help="env INFERPLEX_DATA_DIR, default ./data")
    p.add_argument("--artifact-dir", default=None,
                   help="shared model bytes (env INFERPLEX_ARTIFACT_DIR, default DATA_DIR/artifacts)")
    p.add_argument("--host", default=None, help="env INFERPLEX_HOST, default 127.0.0.1")
    p.add_argument("--http-port", type=int, default=None, help="env INFERPLEX_HTTP_PORT, default 8000")
    p.add_argument("--grpc-port", type=int, default=None, help="env INFERPLEX_GRPC_PORT, default 8001")
    p.add_argument("--replica-id", default=None, help="env INFERPLEX_REPLICA_ID, default cp-0")
    p.set_defaults(func=run)
