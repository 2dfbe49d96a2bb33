"""A worker registers itself with the control plane and keeps its registration alive.

``inferplex worker --register http://cp-a:8000,http://cp-b:8000`` calls
``POST /admin/instances/register`` on one replica (admin key), which grants a store
lease and writes the worker's record bound to it. The worker then heartbeats
``POST /admin/instances/{id}/heartbeat`` every ttl/3; any replica can refresh it,
because the lease lives in the shared store. If the worker dies, it stops
heartbeating, the lease expires, the record vanishes and every replica takes the
worker out of routing (the placement leader re-places its models).

Failure handling:
- a replica that does not answer (or answers 5xx) -> the next URL, round robin;
- 404 on a heartbeat (the lease expired or the record was replaced) -> register again;
- no heartbeat confirmed for a whole TTL -> the lease is surely gone: register again;
- 401/403 (bad key) -> logged loudly and retried slowly: an operator must fix the key,
  and the worker keeps serving whatever it already holds meanwhile.

The register answer carries the control plane's instance credential (header key and
value). A worker without restricted-API settings of its own starts with those APIs
locked and not ready, and unlocks them with it (worker/restricted.py), so it is never
open to anyone but the control plane.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import httpx

from kserve.restricted import InstanceCredential

if TYPE_CHECKING:
    from worker.main import WorkerOptions
    from worker.service import WorkerService

log = logging.getLogger(__name__)

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_instance_id(advertise_host: str, grpc_port: int) -> str:
    """Stable across restarts of the same worker, so a restart replaces its old record."""
    return _ID_UNSAFE.sub("-", f"w-{advertise_host}-{grpc_port}").strip("-")


def advertised_host(args: argparse.Namespace) -> str:
    """The host the control plane reaches this worker at."""
    host = args.advertise_host or args.host
    return socket.gethostname() if host in ("0.0.0.0", "::", "") else host


def instance_id(args: argparse.Namespace) -> str:
    """The id the worker registers (and logs) under: --instance-id made URL-safe, else
    ``w-<advertised host>-<grpc port>``."""
    if args.instance_id:
        return _ID_UNSAFE.sub("-", args.instance_id).strip("-")
    return default_instance_id(advertised_host(args), args.grpc_port)


def parse_urls(value: str) -> list[str]:
    """``http://a:8000,http://b:8000`` -> list; a bare host:port gets ``http://``."""
    urls = []
    for part in value.split(","):
        part = part.strip().rstrip("/")
        if not part:
            continue
        if "://" not in part:
            part = "http://" + part
        if not part.startswith(("http://", "https://")):
            raise ValueError(f"--register URL {part!r} must be http(s)://host:port of a control plane")
        urls.append(part)
    if not urls:
        raise ValueError("--register needs at least one control-plane URL, e.g. http://127.0.0.1:8000")
    return urls


@dataclass(frozen=True, slots=True)
class Registration:
    """What the worker tells the control plane about itself (the register request body).
    It sends no TTL: the control plane's instance_lease_ttl_s applies (one place to set it)."""

    instance_id: str
    http_url: str  # host:port the control plane reaches the v2 HTTP endpoint at
    grpc_url: str  # host:port of the v2 gRPC endpoint
    memory_bytes: int
    instance_class: str = "cpu"


class _Rejected(Exception):
    """The control plane answered, and said no (4xx other than 404)."""


class RegistrationClient:
    def __init__(self, urls: list[str], key: str | None, registration: Registration,
                 on_credential: Callable[[InstanceCredential], None] | None = None) -> None:
        self.urls = urls
        self.registration = registration
        self.on_credential = on_credential
        self.lease_id: int | None = None
        # the TTL the control plane granted; until then a guess for retry pacing
        self.ttl_s = 3
        self._next = 0  # index of the replica to talk to
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.AsyncClient(headers=headers)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="registration")

    async def close(self) -> None:
        """Stop heartbeating and give the lease back, so the control plane stops
        routing here at once instead of after the TTL."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.lease_id is not None:
            path = f"/admin/instances/{self.registration.instance_id}/deregister"
            with contextlib.suppress(Exception):
                await self._call(path, {"lease_id": self.lease_id})
            self.lease_id = None
        await self._http.aclose()

    async def run(self) -> None:
        """Register, then heartbeat forever; never dies on an error."""
        loop = asyncio.get_running_loop()
        confirmed = loop.time()
        while True:
            period = self.ttl_s / 3
            try:
                if self.lease_id is None:
                    await self._register()
                    confirmed = loop.time()
                else:
                    await asyncio.sleep(period)
                    sent = loop.time()
                    if await self._heartbeat():
                        confirmed = sent
                    elif loop.time() - confirmed > self.ttl_s:
                        log.warning("no heartbeat confirmed for %.1fs (TTL %ds): registering again",
                                    loop.time() - confirmed, self.ttl_s)
                        self.lease_id = None
            except asyncio.CancelledError:
                raise
            except _Rejected as exc:
                log.error("control plane refused registration of %s: %s",
                          self.registration.instance_id, exc)
                await asyncio.sleep(max(period, 2.0))
            except Exception:
                log.exception("registration loop error; retrying")
                await asyncio.sleep(min(period, 1.0))

    # ---- one step each --------------------------------------------------------------

    async def _register(self) -> None:
        answered = await self._post_any("/admin/instances/register", asdict(self.registration),
                                        "registration")
        if answered is None:
            # every replica failed: back off a little before the next round
            await asyncio.sleep(min(self.ttl_s / 3, 1.0))
            return
        url, resp = answered
        if resp.status_code != 200:
            raise _Rejected(f"{resp.status_code} from {url}: {_error_text(resp)}")
        answer = resp.json()
        credential = _credential(answer.get("credential"))
        if credential is None:
            log.error("the control plane at %s sent no instance credential: this worker keeps its "
                      "restricted APIs as they are", url)
        elif self.on_credential is not None:
            self.on_credential(credential)
        self.lease_id = int(answer["lease_id"])
        self.ttl_s = int(answer["ttl_s"])
        log.info("registered as %s with %s (lease %x, TTL %ds)", self.registration.instance_id,
                 url, self.lease_id, self.ttl_s)

    async def _heartbeat(self) -> bool:
        """True when a replica confirmed the lease; re-registers on 404."""
        assert self.lease_id is not None
        answered = await self._post_any(f"/admin/instances/{self.registration.instance_id}/heartbeat",
                                        {"lease_id": self.lease_id}, "heartbeat")
        if answered is None:
            return False
        url, resp = answered
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            log.warning("registration of %s is gone (%s): registering again",
                        self.registration.instance_id, _error_text(resp))
            self.lease_id = None
            return False
        raise _Rejected(f"{resp.status_code} from {url}: {_error_text(resp)}")

    async def _post_any(self, path: str, body: dict[str, object],
                        what: str) -> tuple[str, httpx.Response] | None:
        """The first answer below 500, starting at the current replica: one that does not
        answer, or answers 5xx, passes the turn to the next (round robin). None when
        every replica failed."""
        for _ in range(len(self.urls)):
            url = self.urls[self._next]
            try:
                resp = await self._call(path, body)
            except httpx.HTTPError as exc:
                log.warning("%s to %s failed: %s", what, url, exc)
            else:
                if resp.status_code < 500:
                    return url, resp
                log.warning("%s to %s answered %d: %s", what, url, resp.status_code, _error_text(resp))
            self._next = (self._next + 1) % len(self.urls)
        return None

    async def _call(self, path: str, body: dict[str, object]) -> httpx.Response:
        # a call must give up well within a TTL so the next replica can be tried in time
        timeout = max(1.0, self.ttl_s / 4)
        return await self._http.post(self.urls[self._next] + path, json=body, timeout=timeout)


def _credential(value: Any) -> InstanceCredential | None:
    if not isinstance(value, dict):
        return None
    try:
        return InstanceCredential(str(value["key"]), str(value["value"]))
    except (KeyError, ValueError):
        return None


def _error_text(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("error", resp.text))
    except ValueError:
        return resp.text[:200]


# ---- `inferplex worker` wiring ------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("control-plane registration")
    g.add_argument("--register", default="", metavar="URL[,URL...]",
                   help="register with these control-plane replicas (REST URLs, comma-separated) under "
                        "a lease kept alive by heartbeats; the first that answers is used")
    g.add_argument("--advertise-host", default="",
                   help="host the control plane reaches this worker at (default: --host, or this "
                        "machine's hostname when --host is 0.0.0.0)")
    g.add_argument("--register-key", default=os.environ.get("INFERPLEX_KEY", ""),
                   help="admin API key for registration (default: env INFERPLEX_KEY)")
    g.add_argument("--instance-class", default="cpu",
                   help="hardware class reported to the control plane (profiles are kept per class)")


def attach(args: argparse.Namespace, options: WorkerOptions) -> None:
    """With --register: register once the worker serves, deregister when it stops.
    Bad flags fail here, before the worker binds its ports."""
    if not args.register:
        return
    try:
        urls = parse_urls(args.register)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if not args.register_key:
        raise SystemExit("--register needs an admin key: pass --register-key or set INFERPLEX_KEY")
    host = advertised_host(args)
    clients: list[RegistrationClient] = []
    # one INFO line per heartbeat from httpx would drown the worker's own log
    logging.getLogger("httpx").setLevel(logging.WARNING)

    async def start(service: WorkerService) -> None:
        registration = Registration(
            instance_id=options.instance_id, http_url=f"{host}:{args.http_port}",
            grpc_url=f"{host}:{args.grpc_port}", memory_bytes=service.repository.budget.budget,
            instance_class=args.instance_class,
        )
        rules = options.restrictions
        if rules.awaiting_control_plane:
            service.ready = False  # the control plane would be refused until its credential arrives

        def adopt(credential: InstanceCredential) -> None:
            rules.adopt(credential)
            service.ready = True

        client = RegistrationClient(urls, args.register_key, registration, adopt)
        clients.append(client)
        client.start()

    async def stop(_: WorkerService) -> None:
        for client in clients:
            await client.close()

    options.on_ready.append(start)
    options.on_stop.append(stop)
