"""``inferplex up``: the whole system on one machine in one command.

Starts N ``inferplex worker`` children on free loopback ports, the embedded state
store under ``--data-dir`` (a restart keeps tenants, keys and models), and the
control plane (REST + v2 HTTP via uvicorn, v2 gRPC) in this process. Workers are
registered as ``embedded`` instances ``worker-0..N-1``. The workers restrict every
API but health to one credential (kept in ``--data-dir``/instance.key, 0600, unless
INFERPLEX_INSTANCE_RESTRICTED_VALUE is set) that only this control plane sends, so
nothing else on the machine can run, load or list their models. A worker that exits is
started again (same instance id, new ports) after a back-off. SIGINT/SIGTERM stop
everything; children also get SIGTERM if this process dies (PDEATHSIG), so no
worker outlives it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import uvicorn
from pydantic import SecretStr

from controlplane.settings import Settings
from kserve.http_connections import DEFAULT_MAX_REQUEST_BYTES, BoundedConfig
from kserve.restricted import InstanceCredential
from kserve.sizes import size_arg
from worker.affinity import parse_cpus, pin_to

if TYPE_CHECKING:
    from controlplane.services import Services

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it): it halves the event loop's
    share of the gateway's per-request CPU; grpc.aio runs on it too."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def http_server(app: object, host: str, port: int, settings: Settings) -> uvicorn.Server:
    """The REST API + v2 HTTP server of the control plane (``up`` and ``controlplane``)."""
    from controlplane.app import served

    return uvicorn.Server(BoundedConfig(served(app), host=host, port=port, log_level="warning",
                                        access_log=False, lifespan="on",
                                        header_timeout_s=settings.header_timeout_s,
                                        max_header_bytes=settings.max_header_bytes))


def free_ports(host: str, n: int) -> list[int]:
    """``n`` distinct free ports: each stays bound until all are picked, so none repeats."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]


def hold_port(host: str, port: int, flag: str) -> socket.socket:
    """Bind (not listen on) the control plane's own port before any worker starts: a worker's
    free port can then never be it (with both picked free and bound later, a worker could take
    the control plane's port and answer its health check). A port in use fails here, named."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart after TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port} ({exc.strerror}); pass another {flag}") from exc
    return sock


class PortInUse(Exception):
    """The control plane's port is taken by another process."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(slots=True)
class WorkerChild:
    index: int
    http_port: int
    grpc_port: int
    popen: subprocess.Popen[bytes]

    @property
    def instance_id(self) -> str:
        return f"worker-{self.index}"


def worker_bounds(settings: Settings) -> list[str]:
    """The control plane's request bounds as worker flags: a request the gateway admits is
    not refused by a worker's tighter default, and no worker holds a connection that never
    finishes its headers longer than the gateway would."""
    # never below the worker's own default: the profiler sends the control plane's own
    # batches (up to max_batch_size) straight to the worker, past the tenants' limit
    return ["--header-timeout", repr(settings.header_timeout_s),
            "--max-header-bytes", str(settings.max_header_bytes),
            "--max-request-bytes", str(max(settings.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES)),
            "--max-json-values", str(settings.max_json_values)]


def start_worker(index: int, host: str, ports: tuple[int, int], memory_bytes: int, threads: int,
                 log_dir: Path, cpus: str | None = None, credential: InstanceCredential | None = None,
                 bounds: Sequence[str] = ()) -> WorkerChild:
    """``ports``: its HTTP and gRPC ports (from ``free_ports``); ``bounds``: request-bound
    flags (``worker_bounds``)."""
    http_port, grpc_port = ports
    args = [sys.executable, "-m", "controlplane.cli", "worker", "--host", host,
            "--http-port", str(http_port), "--grpc-port", str(grpc_port),
            "--memory-budget", str(memory_bytes), "--threads", str(threads),
            "--model-control-mode", "explicit", "--instance-id", f"worker-{index}", *bounds]
    if cpus:
        args += ["--cpus", cpus]
    log_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_dir / f"worker-{index}.log", "ab")  # noqa: SIM115 - the child owns it
    env = dict(os.environ)
    if credential is not None:  # in the environment, not argv: ps shows argv to every user
        env |= {"INFERPLEX_INSTANCE_RESTRICTED_KEY": credential.key,
                "INFERPLEX_INSTANCE_RESTRICTED_VALUE": credential.value}
    popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             preexec_fn=_die_with_parent, env=env)
    out.close()
    return WorkerChild(index, http_port, grpc_port, popen)


async def wait_workers_ready(workers: list[WorkerChild], host: str, timeout_s: float,
                             log_dir: Path, stop: StopFlag) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(workers)
    async with httpx.AsyncClient(timeout=1.0) as client:
        while pending:
            stop.check()
            for w in list(pending):
                if w.popen.poll() is not None:
                    tail = (log_dir / f"worker-{w.index}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"worker-{w.index} exited with {w.popen.returncode}:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(f"http://{host}:{w.http_port}/v2/health/ready")
                    if r.status_code == 200:
                        pending.remove(w)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"workers {[w.index for w in pending]} not ready after {timeout_s}s; "
                                   f"see {log_dir}")
            if pending:
                await asyncio.sleep(0.1)


def stop_workers(workers: list[WorkerChild], timeout_s: float = 10.0) -> None:
    for w in workers:
        if w.popen.poll() is None:
            w.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for w in workers:
        try:
            w.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker-%d did not stop in %.0fs; killing it", w.index, timeout_s)
            w.popen.kill()
            w.popen.wait()


def write_secret(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)


def save_new_admin_key(settings: Settings, services: Services) -> Path | None:
    """Write the first admin key, if this start just minted it, to ``settings.admin_key_path``.
    Call it right after build_services: the key exists nowhere else, and any later failure
    (a busy port, Ctrl-C) would lose it for good. Returns the file written, or None."""
    if not services.new_admin_key:
        return None
    path = settings.admin_key_path
    write_secret(path, services.new_admin_key)
    return path


def instance_credential(settings: Settings) -> InstanceCredential:
    """The credential ``up``'s workers demand: the configured one, else the one kept in
    data_dir/instance.key (made on first start), so instances an operator added to this
    ``up`` with the same value keep working across restarts."""
    if settings.instance_restricted_value is None:
        path = settings.data_dir / "instance.key"
        value = path.read_text().strip() if path.exists() else ""
        if not value:
            value = secrets.token_urlsafe(32)
            write_secret(path, value)
        settings.instance_restricted_value = SecretStr(value)
    credential = settings.instance_credential
    assert credential is not None
    return credential


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the options given (``inferplex up`` and ``inferplex controlplane``);
    the environment (INFERPLEX_*) and Settings' defaults fill the rest."""
    given = {"store_url": getattr(args, "etcd", None)}
    given |= {name: getattr(args, name, None) for name in
              ("data_dir", "artifact_dir", "host", "http_port", "grpc_port", "replica_id")}
    settings = Settings(**{k: v for k, v in given.items() if v not in (None, "")})  # type: ignore[arg-type]
    settings.data_dir = settings.data_dir.resolve()
    if settings.artifact_dir is not None:
        settings.artifact_dir = settings.artifact_dir.resolve()
    return settings

# a worker that dies is started again after a back-off that doubles while it keeps dying
# and starts over once it has stayed up STABLE_S
RESTART_MIN_S, RESTART_MAX_S, STABLE_S = 0.5, 30.0, 60.0


async def supervise_workers(workers: list[WorkerChild],
                            restart: Callable[[int], Awaitable[WorkerChild]],
                            poll_s: float = 0.25) -> None:
    """Keep ``workers`` running while ``up`` serves: one that exits (killed, out of memory, a
    crash) is replaced in its slot of the list by ``restart(index)``, the same instance id on
    new ports. Runs until cancelled; a restart that fails is tried again after the back-off."""
    backoff = {w.index: RESTART_MIN_S for w in workers}
    up_since = {w.index: time.monotonic() for w in workers}
    retry_at: dict[int, float] = {}
    while True:
        await asyncio.sleep(poll_s)
        now = time.monotonic()
        for pos, w in enumerate(workers):
            if w.popen.poll() is None:
                if now - up_since[w.index] >= STABLE_S:
                    backoff[w.index] = RESTART_MIN_S
                continue
            if w.index not in retry_at:
                retry_at[w.index] = now + backoff[w.index]
                log.warning("worker-%d exited with %s; starting it again in %.1fs (its log: "
                            "worker-%d.log)", w.index, w.popen.returncode, backoff[w.index], w.index)
            if now < retry_at[w.index]:
                continue
            backoff[w.index] = min(RESTART_MAX_S, 2 * backoff[w.index])
            try:
                workers[pos] = await restart(w.index)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # tried again after the back-off
                retry_at[w.index] = time.monotonic() + backoff[w.index]
                log.warning("worker-%d did not start again (%s); next try in %.1fs", w.index, exc,
                            backoff[w.index])
                continue
            del retry_at[w.index]
            up_since[w.index] = time.monotonic()
            log.info("worker-%d is running again", w.index)


async def _serve(args: argparse.Namespace, settings: Settings, stop: StopFlag) -> int:
    from controlplane.app import create_app
    from controlplane.services import build_services, close_services

    data_dir, host = settings.data_dir, settings.host
    log_dir = data_dir / "logs"
    workers: list[WorkerChild] = []
    services = None
    held: list[socket.socket] = []
    try:
        held = [hold_port(host, settings.http_port, "--http-port"),
                hold_port(host, settings.grpc_port, "--grpc-port")]
        settings.http_port, settings.grpc_port = (sock.getsockname()[1] for sock in held)  # 0: any
        credential = instance_credential(settings)
        ports = free_ports(host, 2 * args.workers)
        workers = [start_worker(i, host, (ports[2 * i], ports[2 * i + 1]), args.worker_memory,
                                args.worker_threads, log_dir, args.worker_cpus, credential,
                                worker_bounds(settings))
                   for i in range(args.workers)]
        await wait_workers_ready(workers, host, args.worker_start_timeout, log_dir, stop)
        services = await build_services(settings)
        key_file = save_new_admin_key(settings, services)
        stop.check()
        current = {w.instance_id for w in workers}
        for inst in services.instances.list():
            if inst.record.kind == "embedded" and inst.record.instance_id not in current:
                await services.instances.deregister(inst.record.instance_id)  # from a larger earlier run
        async def register(w: WorkerChild, services: Services = services) -> None:
            await services.instances.register(
                f"{host}:{w.http_port}", f"{host}:{w.grpc_port}", args.worker_memory,
                kind="embedded", instance_id=w.instance_id)

        for w in workers:
            await register(w)
        await services.placement.resync()

        async def restart(index: int, services: Services = services) -> WorkerChild:
            http_port, grpc_port = free_ports(host, 2)
            w = start_worker(index, host, (http_port, grpc_port), args.worker_memory,
                             args.worker_threads, log_dir, args.worker_cpus, credential,
                             worker_bounds(settings))
            try:
                await wait_workers_ready([w], host, args.worker_start_timeout, log_dir, stop)
            except BaseException:
                stop_workers([w])
                raise
            # the same instance id on new addresses: the registry swaps its driver, and the
            # resync reads what it serves (nothing) so the leader places its models again
            await register(w)
            await services.placement.resync()
            return w

        app = create_app(settings, services)
        server = http_server(app, host, settings.http_port, settings)
        stop.server = server
        stop.check()
        held.pop().close()  # the gRPC gateway binds it as the app starts
        serving = asyncio.create_task(server.serve(sockets=held))
        # uvicorn exposes only a flag for "listening"
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if serving.done():
            await serving
            return 1
        lines = ["inferplex is up",
                 f"  REST API + v2 HTTP : http://{host}:{settings.http_port}   (docs: /docs)",
                 f"  v2 gRPC            : {host}:{settings.grpc_port}",
                 f"  workers            : {len(workers)} x {args.worker_memory} bytes, APIs restricted to header "
                 f"{credential.key!r} (INFERPLEX_INSTANCE_RESTRICTED_VALUE, else {data_dir / 'instance.key'})",
                 f"  data               : {data_dir}"]
        if key_file is not None:
            lines.append(f"  admin key          : {services.new_admin_key}   (shown once; also in {key_file})")
        else:
            lines.append(f"  admin key          : created on first start (see {settings.admin_key_path})")
        print("\n".join(lines), flush=True)
        supervisor = asyncio.create_task(supervise_workers(workers, restart), name="supervise-workers")
        try:
            await serving
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        return 0
    finally:
        for sock in held:
            sock.close()
        if services is not None:
            await close_services(services)
        stop_workers(workers)
        log.info("inferplex stopped")


class Stopped(Exception):
    """SIGINT/SIGTERM arrived before serving began."""


@dataclass(slots=True)
class StopFlag:
    requested: bool = False
    server: uvicorn.Server | None = None

    def handle(self, signum: int, _frame: object) -> None:
        # a flag, never an exception: uvicorn re-raises the signal after its own graceful exit
        self.requested = True
        if self.server is not None:
            self.server.should_exit = True

    def check(self) -> None:
        if self.requested:
            raise Stopped()


def run(args: argparse.Namespace) -> int:
    # the per-request lines of the readiness/memory polls drown everything else
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = settings_from_args(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for flag, value in (("--cpus", args.cpus), ("--worker-cpus", args.worker_cpus)):
        try:
            cpus = parse_cpus(value) if value else None
        except ValueError as exc:
            raise SystemExit(f"{flag}: {exc}") from None
        if flag == "--cpus" and cpus:
            try:
                pin_to(cpus)
            except ValueError as exc:
                raise SystemExit(f"--cpus: {exc}") from None
    stop = StopFlag()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop.handle)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(_serve(args, settings, stop))
    except Stopped:
        return 0
    except PortInUse as exc:
        raise SystemExit(str(exc)) from None


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("up", help="run control plane + N embedded workers on this machine")
    p.add_argument("--data-dir", default=None,
                   help="state store, artifacts, logs and admin.key live here (env INFERPLEX_DATA_DIR, default ./data)")
    p.add_argument("--workers", type=int, default=2, help="embedded workers to start (default 2)")
    p.add_argument("--worker-memory", type=size_arg, default=1 << 30,
                   help="memory budget per worker, e.g. 512MiB (default 1GiB)")
    p.add_argument("--worker-threads", type=int, default=1, help="intra-op threads per worker")
    p.add_argument("--worker-cpus", default=None, metavar="LIST",
                   help="pin every worker to these CPUs, e.g. '1' (default: no pinning)")
    p.add_argument("--cpus", default=None, metavar="LIST",
                   help="pin the control plane to these CPUs, e.g. '0' (default: no pinning)")
    p.add_argument("--host", default=None, help="bind address (env INFERPLEX_HOST, default 127.0.0.1)")
    p.add_argument("--http-port", type=int, default=None,
                   help="REST + v2 HTTP port (env INFERPLEX_HTTP_PORT, default 8000)")
    p.add_argument("--grpc-port", type=int, default=None, help="v2 gRPC port (env INFERPLEX_GRPC_PORT, default 8001)")
    p.add_argument("--worker-start-timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    p.set_defaults(func=run)
