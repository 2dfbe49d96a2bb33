"""Operator and tenant commands against a running control plane's REST API:
``inferplex tenant create|list|delete``, ``inferplex key issue|list|revoke``,
``inferplex model upload|list|describe|delete``.

Every command takes ``--url`` (env INFERPLEX_URL) and ``--key`` (env INFERPLEX_KEY).
Server errors are printed as the server's message and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from controlplane.validation import MAX_BATCH_SIZE_RULE

DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK = 1024 * 1024


# the server's 400 to an admin key that names no tenant says "?tenant="; here it is the flag
PASS_TENANT = "an admin key acts on one tenant's models: pass --tenant NAME"
_UPLOAD_EPILOG = "what is inferred when not given:\n" + "\n".join(
    textwrap.fill(item, 88, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)
    for item in (
        "--inputs, --outputs: read from an ONNX file (names, datatypes, dims). A TorchScript file "
        "states no shapes: give both, or --config.",
        f"--max-batch-size: {MAX_BATCH_SIZE_RULE}",
        "--config FILE: a Triton config.pbtxt, or its JSON form, as Triton's model repository takes "
        "it. Its input, output and max_batch_size replace --inputs, --outputs and --max-batch-size (a "
        "max_batch_size it leaves out follows the rule above); its name, when given, is the model's. "
        "The server checks it against the file; instance groups, batching and other fields are refused.",
    ))


class CliError(Exception):
    pass


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("INFERPLEX_URL", DEFAULT_URL),
                        help="control plane REST URL (env INFERPLEX_URL)")
    common.add_argument("--key", default=os.environ.get("INFERPLEX_KEY"),
                        help="API key (env INFERPLEX_KEY)")
    common.add_argument("--tenant", help="admin keys: the tenant to act on")

    def group(name: str, help_text: str) -> argparse._SubParsersAction:
        parser = subparsers.add_parser(name, help=help_text)
        return parser.add_subparsers(dest=f"{name}_command", required=True)

    def leaf(sub: argparse._SubParsersAction, name: str, help_text: str,
             func: Callable[[argparse.Namespace], int], **kwargs: Any) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, parents=[common], **kwargs)
        parser.set_defaults(func=lambda args: _run(func, args))
        return parser

    tenant = group("tenant", "manage tenants (admin)")
    p = leaf(tenant, "create", "create a tenant", _tenant_create)
    p.add_argument("name")
    p.add_argument("--display-name", default="")
    leaf(tenant, "list", "list tenants", _tenant_list)
    p = leaf(tenant, "update", "change a tenant's scheduling policy (weight, quotas, service class)",
             _tenant_update)
    p.add_argument("name")
    p.add_argument("--weight", type=float, help="share of contended instance time (default 1)")
    p.add_argument("--rate", type=float, dest="rate_per_s", help="requests per second (token bucket)")
    p.add_argument("--burst", type=int, help="token bucket size")
    p.add_argument("--max-concurrent", type=int, help="requests admitted and not yet answered")
    p.add_argument("--service-class", choices=["interactive", "batch"])
    p = leaf(tenant, "delete", "delete a tenant with its keys and models", _tenant_delete)
    p.add_argument("name")

    key = group("key", "manage API keys (admin)")
    p = leaf(key, "issue", "issue a key for --tenant (or an admin key without it); it is printed "
             "alone on stdout, once: KEY=$(inferplex key issue --tenant acme)", _key_issue)
    p.add_argument("--expires-in-s", type=float, default=None)
    p.add_argument("--json", action="store_true",
                   help="print the whole answer as JSON (key, key_id, role, tenant, expires_at)")
    leaf(key, "list", "list the key ids of --tenant (or the admin keys)", _key_list)
    p = leaf(key, "revoke", "revoke a key by its id", _key_revoke)
    p.add_argument("key_id")

    instance = group("instance", "inference instances (admin)")
    leaf(instance, "list", "every instance: memory, health, draining, loaded models", _instance_list)
    for name, help_text in (("drain", "load nothing new on an instance and move its models off"),
                            ("resume", "put a drained instance back in service"),
                            ("remove", "forget an instance (its models stay loaded there)")):
        p = leaf(instance, name, help_text, _instance_action)
        p.add_argument("instance_id")

    model = group("model", "upload and manage models")
    p = leaf(model, "upload", "upload an ONNX or TorchScript model", _model_upload,
             epilog=_UPLOAD_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path)
    p.add_argument("--name", help="the model's name (required unless --config names the model)")
    p.add_argument("--version", type=int, help="version number (default: the next one)")
    p.add_argument("--max-batch-size", type=int, help="largest batch (default: see below)")
    p.add_argument("--slo-ms", type=float, help="latency target in ms (default 100)")
    p.add_argument("--inputs", help='JSON list, e.g. \'[{"name":"INPUT__0","datatype":"FP32","dims":[64]}]\' '
                   "(default: read from an ONNX file)")
    p.add_argument("--outputs", help="JSON list, like --inputs (default: read from an ONNX file)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="a Triton model config for the file: config.pbtxt or its JSON form, with "
                   "name, platform/backend, max_batch_size, input and output (instead of --inputs, "
                   "--outputs and --max-batch-size)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-wait", action="store_true",
                   help="return once uploaded, without waiting for profiling to finish")
    p.add_argument("--wait-timeout-s", type=float, default=600.0,
                   help="how long to wait for profiling (default 600)")
    leaf(model, "list", "list models", _model_list)
    p = leaf(model, "describe", "a model's versions, status and profile", _model_describe)
    p.add_argument("name")
    p = leaf(model, "delete", "delete a model (or one --version)", _model_delete)
    p.add_argument("name")
    p.add_argument("--version", type=int)


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    # one INFO line per HTTP request would drown the command's own output
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return func(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"error: cannot talk to the control plane at {args.url}: {exc} "
              "(set --url or INFERPLEX_URL)", file=sys.stderr)
        return 2


def _client(args: argparse.Namespace) -> httpx.Client:
    if not args.key:
        raise CliError("no API key: pass --key or set INFERPLEX_KEY")
    return httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {args.key}"},
                        timeout=httpx.Timeout(30.0, read=300.0))


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    with _client(args) as client:
        return _checked(client.request(method, path, **kwargs))


def _checked(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        message = body.get("error") if isinstance(body, dict) else None
        raise CliError(message or f"HTTP {response.status_code}: {response.text[:500]}")
    return body


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _instance_list(args: argparse.Namespace) -> int:
    for inst in _call(args, "GET", "/admin/instances"):
        state = "draining" if inst["draining"] else ("healthy" if inst["healthy"] else "unhealthy")
        print(f"{inst['instance_id']}\t{state}\t{inst['used_bytes']}/{inst['memory_bytes']} bytes\t"
              f"{len(inst['models'])} models")
    return 0


def _instance_action(args: argparse.Namespace) -> int:
    iid, action = args.instance_id, args.instance_command
    if action == "remove":
        _call(args, "DELETE", f"/admin/instances/{iid}")
        print(f"removed instance {iid}")
        return 0
    _print(_call(args, "POST" if action == "drain" else "DELETE", f"/admin/instances/{iid}/drain"))
    return 0


def _tenant_params(args: argparse.Namespace) -> dict[str, str]:
    return {"tenant": args.tenant} if args.tenant else {}


# --------------------------------------------------------------------------- tenants and keys


def _tenant_create(args: argparse.Namespace) -> int:
    _print(_call(args, "POST", "/admin/tenants", json={"name": args.name, "display_name": args.display_name}))
    return 0


def _tenant_update(args: argparse.Namespace) -> int:
    changes = {k: v for k in ("weight", "rate_per_s", "burst", "max_concurrent", "service_class")
               if (v := getattr(args, k)) is not None}
    if not changes:
        raise CliError("nothing to change: give --weight, --rate, --burst, --max-concurrent or --service-class")
    _print(_call(args, "PATCH", f"/admin/tenants/{args.name}", json=changes))
    return 0


def _tenant_list(args: argparse.Namespace) -> int:
    for tenant in _call(args, "GET", "/admin/tenants")["tenants"]:
        print(f"{tenant['name']}\t{tenant['display_name']}")
    return 0


def _tenant_delete(args: argparse.Namespace) -> int:
    _call(args, "DELETE", f"/admin/tenants/{args.name}")
    print(f"deleted tenant {args.name}")
    return 0


def _key_issue(args: argparse.Namespace) -> int:
    path = f"/admin/tenants/{args.tenant}/keys" if args.tenant else "/admin/keys"
    issued = _call(args, "POST", path, json={"expires_in_s": args.expires_in_s})
    if args.json:
        _print(issued)
    else:
        print(issued["key"])
    whose = f"tenant {issued['tenant']}" if issued["tenant"] else "admin"
    expiry = (f", expires {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(issued['expires_at']))}"
              if issued["expires_at"] is not None else "")
    print(f"{whose} key {issued['key_id']}{expiry}: store the key now, it is not shown again",
          file=sys.stderr)
    return 0


def _key_list(args: argparse.Namespace) -> int:
    path = f"/admin/tenants/{args.tenant}/keys" if args.tenant else "/admin/keys"
    for k in _call(args, "GET", path)["keys"]:
        print(f"{k['key_id']}\t{k['role']}\t{'revoked' if k['revoked'] else 'active'}")
    return 0


def _key_revoke(args: argparse.Namespace) -> int:
    _call(args, "DELETE", f"/admin/keys/{args.key_id}")
    print(f"revoked {args.key_id}")
    return 0


# --------------------------------------------------------------------------- models


def _file_chunks(path: Path, size: int, quiet: bool) -> Iterator[bytes]:
    sent = 0
    last = -1
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sent += len(chunk)
            percent = 100 * sent // size if size else 100
            if not quiet and percent != last:
                bar = "#" * (percent // 4)
                print(f"\ruploading {path.name} [{bar:<25}] {percent:3d}% ({sent}/{size} bytes)",
                      end="", file=sys.stderr, flush=True)
                last = percent
            yield chunk
    if not quiet:
        print(file=sys.stderr)


def _model_upload(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise CliError(f"no such file: {args.file}")
    config, config_name = _read_config(args) if args.config is not None else (None, "")
    if not args.name and not config_name:
        raise CliError("missing model name: pass --name NAME (or a --config that names the model)")
    size = args.file.stat().st_size
    params: dict[str, Any] = {**_tenant_params(args)}
    for key, value in (("name", args.name), ("version", args.version), ("max_batch_size", args.max_batch_size),
                       ("slo_ms", args.slo_ms), ("inputs", args.inputs), ("outputs", args.outputs)):
        if value is not None:
            params[key] = value
    chunks = _file_chunks(args.file, size, args.quiet)
    if config is None:
        body, headers = chunks, {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    else:
        body, headers = _multipart(config, chunks, size)
    with _client(args) as client:
        _check_scope(client, args)  # before a byte of the file is sent
        response = client.post("/v1/models", params=params, content=body, headers=headers)
    record = _checked(response)
    print(f"uploaded {record['name']} version {record['version']} ({record['platform']}, "
          f"status {record['status']})")
    if args.no_wait or record["status"] != "profiling":
        return 0
    final = _wait_profiled(args, record, args.wait_timeout_s)
    reason = f": {final['reason']}" if final.get("reason") else ""
    print(f"{final['name']} version {final['version']} is {final['status']}{reason}")
    return 1 if final["status"] == "failed" else 0


def _read_config(args: argparse.Namespace) -> tuple[str, str]:
    """The --config file's text and the model name it gives (""), read with the server's own
    parser so a mistake in it costs no upload (the server checks it again, against the file)."""
    from kserve.errors import InferplexError
    from modelfiles.config import parse_tenant_config

    clash = [flag for flag, value in (("--inputs", args.inputs), ("--outputs", args.outputs),
                                      ("--max-batch-size", args.max_batch_size)) if value is not None]
    if clash:
        raise CliError(f"give the model's I/O once: either --config or {', '.join(clash)}, not both")
    try:
        text = args.config.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"no such file: {args.config}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read --config {args.config} as UTF-8 text: {exc}") from None
    try:
        declared = parse_tenant_config(text)
    except InferplexError as exc:
        raise CliError(f"--config {args.config}: {exc.message}") from None
    if declared.name and args.name and declared.name != args.name:
        raise CliError(f"--config names the model {declared.name!r} but --name is {args.name!r}: make them "
                       "the same, or leave one out")
    return text, declared.name


def _multipart(config: str, file_chunks: Iterator[bytes], size: int) -> tuple[Iterator[bytes], dict[str, str]]:
    """A multipart/form-data body with the config field and then the file, streamed (the file
    is never whole in memory) with its exact Content-Length."""
    boundary = secrets.token_hex(16)
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="config"\r\n\r\n'.encode()
            + config.encode() + f"\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f'name="file"; filename="model"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode())
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        yield from file_chunks
        yield tail

    return body(), {"Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(len(head) + size + len(tail))}


def _check_scope(client: httpx.Client, args: argparse.Namespace) -> None:
    """Refuse now what the server would refuse only after the whole file: an admin key without
    --tenant, a tenant key naming another tenant, a key that is not valid."""
    probe = client.get("/v1/models", params=_tenant_params(args))
    if probe.status_code == 400 and not args.tenant:
        # the plain list takes no other input: only an admin key naming no tenant gets a 400
        raise CliError(PASS_TENANT)
    _checked(probe)


def _scoped_call(args: argparse.Namespace, method: str, path: str) -> Any:
    """A call on one tenant's models, with --tenant when given. A 400 without --tenant is
    asked about once more (it may be the model's name, or the key's role) so an admin key is
    told the flag to pass, not the server's query parameter."""
    with _client(args) as client:
        response = client.request(method, path, params=_tenant_params(args))
        if response.status_code == 400 and not args.tenant:
            _check_scope(client, args)
        return _checked(response)


def _wait_profiled(args: argparse.Namespace, record: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Poll the server's record of this version until profiling ends, printing its progress."""
    deadline = time.monotonic() + timeout_s
    last = ""
    with _client(args) as client:
        while True:
            body = _checked(client.get(f"/v1/models/{record['name']}", params=_tenant_params(args)))
            current = next((v for v in body["versions"] if v["version"] == record["version"]), None)
            if current is None:
                raise CliError(f"model {record['name']} version {record['version']} was deleted while profiling")
            if current["status"] != "profiling":
                if not args.quiet and current["status"] == "ready":
                    print("\rprofiling 100%", file=sys.stderr, flush=True)  # done, whatever was polled last
                elif not args.quiet and last:
                    print(file=sys.stderr)
                return current
            line = f"profiling {round(100 * (current.get('progress') or 0.0)):3d}%"
            if not args.quiet and line != last:
                print(f"\r{line}", end="", file=sys.stderr, flush=True)
                last = line
            if time.monotonic() > deadline:
                raise CliError(f"still profiling after {timeout_s:.0f}s; check later with "
                               f"`inferplex model describe {record['name']}`")
            time.sleep(0.2)


def _model_list(args: argparse.Namespace) -> int:
    for m in _scoped_call(args, "GET", "/v1/models")["models"]:
        reason = f"\t{m['reason']}" if m["reason"] else ""
        print(f"{m['name']}\t{m['version']}\t{m['platform']}\t{m['status']}{reason}")
    return 0


def _model_describe(args: argparse.Namespace) -> int:
    described = _scoped_call(args, "GET", f"/v1/models/{args.name}")
    for version in described.get("versions", []):
        # the instance-level name is internal (servers before issue 11 sent it): the tenant's
        # name for the model is `name`
        version.pop("qualified_name", None)
    _print(described)
    return 0


def _model_delete(args: argparse.Namespace) -> int:
    path = f"/v1/models/{args.name}" + (f"/versions/{args.version}" if args.version else "")
    deleted = _scoped_call(args, "DELETE", path)
    print(f"deleted {deleted['name']} versions {deleted['versions']}")
    return 0
