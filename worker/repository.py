"""The worker's model repository: what is loaded, in which state, and how loads happen.

Loads and unloads are serialized (one at a time, in a helper thread) so the RSS
delta around a load belongs to that load alone and the event loop keeps serving.
A load builds the new model completely before it replaces anything; if any step
fails, nothing of it stays loaded or charged, and the index shows the model
UNAVAILABLE with the reason (like Triton). A reload that fails leaves the
previous version serving.

Files sent with a load are written to a private folder (under the worker's own
folder, worker/scratch.py) that the model keeps while loaded; when it is unloaded or
replaced, the folder goes to the artifact cache (worker/artifact_cache.py) under the
files' digest. A load that names a digest instead of sending files takes its folder
back from there, or is answered NOT_FOUND ("artifact not in the worker's cache") so
that the caller sends the files.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from kserve.errors import InvalidArgument, NotFound
from modelfiles import config as cfg
from modelfiles.artifacts import NOT_CACHED, files_digest, is_digest
from worker.artifact_cache import ArtifactCache
from worker.memory import MemoryBudget
from worker.sandbox.client import HostLimits, ModelHost, Zygote
from worker.stats import ModelStats

log = logging.getLogger(__name__)

READY, UNAVAILABLE, LOADING = "READY", "UNAVAILABLE", "LOADING"


# address space a host may map beyond the free budget: ORT/torch arenas, thread stacks
_HOST_SLACK_BYTES = 512 << 20


@dataclass
class LoadedVersion:
    version: int
    runtime: ModelHost
    stats: ModelStats = field(default_factory=ModelStats)


@dataclass
class LoadedModel:
    config: mc.ModelConfig
    spec: cfg.ModelSpec
    versions: dict[int, LoadedVersion]
    workdir: Path | None  # private temp dir for file loads; cached or removed on unload or reload
    charged_bytes: int
    load_seconds: float
    digest: str | None = None  # of the files in workdir (modelfiles.artifacts), when known
    from_cache: bool = False  # its files came from the artifact cache, none were sent

    @property
    def latest(self) -> LoadedVersion:
        return self.versions[max(self.versions)]


@dataclass
class ModelEntry:
    name: str
    state: str = UNAVAILABLE
    reason: str = ""
    model: LoadedModel | None = None
    # the versions an unload took away: Triton's index keeps a row for each ("unloaded")
    unloaded_versions: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class IndexRow:
    name: str
    version: str
    state: str
    reason: str


class ModelRepository:
    def __init__(self, budget: MemoryBudget, *, directory: Path | None = None,
                 device: str = "cpu", threads: int = 1, limits: HostLimits | None = None,
                 zygote: Zygote | None = None, models_dir: Path | None = None,
                 cache: ArtifactCache | None = None) -> None:
        """``models_dir``: where loads write their files (default: the system's temp
        folder); ``cache``: the artifact cache (default: none, files are removed)."""
        self.budget = budget
        self.models_dir = models_dir
        self.cache = cache
        self.directory = directory
        self.device = device
        self.threads = threads
        self.limits = limits or HostLimits()
        self.zygote = zygote or Zygote(threads)
        self.entries: dict[str, ModelEntry] = {}
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lookups

    def get(self, name: str, version: str = "") -> tuple[LoadedModel, LoadedVersion]:
        entry = self.entries.get(name)
        if entry is None:
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        model = entry.model
        if model is None:
            raise NotFound(f"Request for unknown model: '{name}' has no available versions")
        if not version:
            return model, model.latest
        loaded = model.versions.get(int(version)) if version.isdigit() else None
        if loaded is None:
            raise NotFound(f"Request for unknown model: '{name}' version {version} is not found")
        return model, loaded

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.get(name, version)
        except NotFound:
            return False
        return True

    def directory_models(self) -> list[str]:
        if self.directory is None or not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith("."))

    def index(self, ready_only: bool = False) -> list[IndexRow]:
        rows: list[IndexRow] = []
        names = sorted(set(self.entries) | set(self.directory_models()))
        for name in names:
            entry = self.entries.get(name)
            if entry is None:  # in the repository directory, never loaded: Triton lists the name only
                if not ready_only:
                    rows.append(IndexRow(name, "", "", ""))
                continue
            model = entry.model  # once: a reload or unload may swap it meanwhile
            if model is not None:
                for v, loaded in sorted(model.versions.items()):
                    reason = loaded.runtime.unavailable_reason
                    rows.append(IndexRow(name, str(v), UNAVAILABLE, reason) if reason and not ready_only
                                else IndexRow(name, str(v), entry.state, entry.reason))
            elif not ready_only:
                rows.extend(IndexRow(name, str(v) if v else "", entry.state, entry.reason)
                            for v in entry.unloaded_versions or (0,))
        return rows

    # ------------------------------------------------------------------ load / unload

    async def load(self, name: str, config_json: str | None = None,
                   files: dict[str, bytes] | None = None, digest: str | None = None) -> LoadedModel:
        """``digest``: load the files of that digest from the artifact cache (no ``files``),
        or check that the ``files`` sent have it."""
        if not name or "/" in name or name in (".", ".."):
            raise InvalidArgument(f"invalid model name {name!r}")
        if digest is not None and not is_digest(digest):
            raise InvalidArgument(f"failed to load '{name}': the artifact digest must be 64 lower-case "
                                  f"hex digits (a sha256), got {digest!r}")
        async with self._lock:
            entry = self.entries.setdefault(name, ModelEntry(name))
            previous = entry.model
            if previous is None:
                entry.state, entry.reason = LOADING, ""
            try:
                model = await asyncio.to_thread(self._build, name, config_json, files or {},
                                                previous.charged_bytes if previous else 0, digest)
            except Exception as exc:
                reason = getattr(exc, "message", None) or f"{exc.__class__.__name__}: {exc}"
                if previous is None and isinstance(exc, NotFound):
                    del self.entries[name]  # nothing by that name (or digest) exists anywhere
                elif previous is None:
                    entry.state, entry.reason = UNAVAILABLE, reason
                # a cache miss is the protocol's normal first answer (the files come next)
                miss = digest is not None and not files and isinstance(exc, NotFound)
                log.log(logging.INFO if miss else logging.WARNING, "load of '%s' failed: %s", name, reason)
                raise
            # One swap: a lookup on another thread (the gRPC server's) sees the old model or
            # the new one, never a half-torn one. Requests already running hold their own
            # LoadedVersion; the old runtimes go when the last of them finishes.
            self.budget.charge(name, model.charged_bytes)  # replaces the previous charge
            entry.model, entry.state, entry.reason, entry.unloaded_versions = model, READY, "", ()
            if previous is not None:
                await asyncio.to_thread(self._close_model, previous)
            log.info("loaded '%s' versions %s in %.3fs%s, charged %d bytes (%d of %d used)",
                     name, sorted(model.versions), model.load_seconds,
                     " from the artifact cache" if model.from_cache else "", model.charged_bytes,
                     self.budget.used, self.budget.budget)
            return model

    async def unload(self, name: str) -> None:
        async with self._lock:
            entry = self.entries.get(name)
            if entry is None:
                return  # Triton answers success for any model that is not loaded, known or not
            old = entry.model
            entry.model, entry.state, entry.reason = None, UNAVAILABLE, "unloaded"
            entry.unloaded_versions = tuple(sorted(old.versions)) if old is not None else entry.unloaded_versions
            if old is not None:
                self.budget.release(name)
                await asyncio.to_thread(self._close_model, old)
            log.info("unloaded '%s' (%d of %d bytes used)", name, self.budget.used, self.budget.budget)

    def close(self) -> None:
        """Stop every model host (the zygote's exit takes them with it)."""
        for entry in self.entries.values():
            if entry.model is not None:
                _close_model(entry.model, None)
        self.zygote.close()

    def _close_model(self, model: LoadedModel) -> None:
        _close_model(model, self.cache)

    # ------------------------------------------------------------------ building (helper thread)

    def _build(self, name: str, config_json: str | None, files: dict[str, bytes],
               releasing: int, digest: str | None = None) -> LoadedModel:
        t0 = time.monotonic()
        workdir: Path | None = None
        from_cache = False
        try:
            if files:
                # hashed only where it is used: to check the digest named, or to cache the files
                caching = self.cache is not None and self.cache.enabled
                sent = (files_digest({k.removeprefix("file:"): v for k, v in files.items()})
                        if caching or digest is not None else None)
                if digest is not None and digest != sent:
                    raise InvalidArgument(
                        f"failed to load '{name}': the files sent do not have the artifact digest the "
                        f"load names ({digest}); send the digest of these files or none"
                    )
                digest = sent
                workdir = self._new_workdir(name)
                model_dir = workdir
                _write_files(model_dir, files, name)
            elif digest is not None:
                workdir = self._new_workdir(name)
                if self.cache is None or not self.cache.take(digest, workdir):
                    raise NotFound(f"{NOT_CACHED}: failed to load '{name}' by its artifact digest "
                                   f"{digest}; send the load again with the model's files")
                from_cache = True
                model_dir = workdir
            else:
                model_dir = self._directory_model(name)
            if config_json:
                config = cfg.parse_json(config_json, name)
            elif (model_dir / "config.pbtxt").is_file():
                config = cfg.parse_pbtxt((model_dir / "config.pbtxt").read_text(), name)
            else:
                config = mc.ModelConfig()
            config.name = name  # the instance-level name is the one the caller loads under
            versions = _select_versions(model_dir, config)
            platform = cfg.resolve_platform(config, model_dir / str(versions[-1]))
            paths = {v: model_dir / str(v) / config.default_model_filename for v in versions}
            missing = [str(p.relative_to(model_dir)) for p in paths.values() if not p.is_file()]
            if missing:
                raise InvalidArgument(
                    f"failed to load '{name}': model file(s) {missing} not found; a {platform} model "
                    f"needs <version>/{config.default_model_filename}"
                )
            estimate = sum(_tree_bytes(p.parent) for p in paths.values())
            self.budget.check(name, estimate, releasing)
            hosts = self._start_hosts(name, config, paths, self.budget.free + releasing)
            try:
                spec = cfg.spec_of(config)
                for host in hosts.values():
                    host.set_types({t.name: t.datatype for t in spec.inputs},
                                   {t.name: t.datatype for t in spec.outputs})
                measured = sum(host.private_bytes() for host in hosts.values())
                charged = max(measured, estimate)
                self.budget.check(name, charged, releasing)
            except BaseException:
                _close_all(hosts.values())
                raise
            log.info("'%s': its hosts hold %d private bytes, files are %d bytes", name, measured, estimate)
            loaded = {v: LoadedVersion(v, hosts[v]) for v in sorted(hosts)}
            return LoadedModel(config, spec, loaded, workdir, charged, time.monotonic() - t0,
                               digest if workdir is not None else None, from_cache)
        except BaseException:
            if workdir is not None and from_cache and self.cache is not None:
                self.cache.admit(digest or "", workdir)  # its files are fine; the load was not
            elif workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _new_workdir(self, name: str) -> Path:
        if self.models_dir is not None:
            return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.models_dir))
        return Path(tempfile.mkdtemp(prefix=f"inferplex-{name}-"))

    def _start_hosts(self, name: str, config: mc.ModelConfig, paths: dict[int, Path],
                     free: int) -> dict[int, ModelHost]:
        """One confined host per version, the newest first: its graph completes the config
        (ONNX) the older versions are then loaded with. ``config`` is completed in place."""
        hosts: dict[int, ModelHost] = {}
        try:
            for version in sorted(paths, reverse=True):
                request = {
                    "name": name, "version_dir": str(paths[version].parent),
                    "filename": paths[version].name, "config": cfg.to_json(config),
                    "device": self.device, "threads": self.threads,
                    "max_model_bytes": self.limits.max_model_bytes,
                    "max_input_bytes": self.limits.max_input_bytes,
                    # what its allocations may add to the zygote's address space: the free budget
                    # plus room for the runtime's own arenas and thread stacks
                    "memory_limit_extra": max(free, 0) + _HOST_SLACK_BYTES,
                }
                host = ModelHost(self.zygote, request, limits=self.limits)
                hosts[version] = host
                ready = host.start()
                if len(hosts) == 1:
                    completed = cfg.parse_json(ready["config"], name)
                    completed.name = name
                    config.CopyFrom(completed)
        except BaseException:
            _close_all(hosts.values())
            raise
        return hosts

    def _directory_model(self, name: str) -> Path:
        if self.directory is None:
            raise InvalidArgument(
                f"failed to load '{name}': no model files were sent and the worker has no "
                "--model-repository; send 'config' and 'file:<version>/<filename>' parameters"
            )
        model_dir = self.directory / name
        if not model_dir.is_dir():
            raise NotFound(
                f"failed to load '{name}': no model named '{name}' in the model repository "
                f"{self.directory}"
            )
        return model_dir


def _write_files(model_dir: Path, files: dict[str, bytes], name: str) -> None:
    for key, data in files.items():
        rel = key.removeprefix("file:")
        parts = PurePosixPath(rel).parts
        if (not key.startswith("file:") or len(parts) < 2 or rel.startswith("/")
                or any(p in ("..", ".", "") for p in parts) or "\\" in rel):
            raise InvalidArgument(
                f"failed to load '{name}': bad file parameter {key!r}; use 'file:<version>/<filename>' "
                "with a relative path inside the model folder, e.g. 'file:1/model.onnx'"
            )
        if not parts[0].isdigit():
            raise InvalidArgument(
                f"failed to load '{name}': file parameter {key!r} must start with a numeric "
                "version directory, e.g. 'file:1/model.onnx'"
            )
        target = model_dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _select_versions(model_dir: Path, config: mc.ModelConfig) -> list[int]:
    """Version directories to load, by the config's version_policy (Triton's default: latest 1)."""
    available = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not available:
        raise InvalidArgument(
            f"failed to load '{config.name}': no version directories found; put the model file "
            "in a numbered folder, e.g. 1/model.onnx (file:1/model.onnx when uploading)"
        )
    policy = config.version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return available
    if kind == "specific":
        wanted = sorted(set(int(v) for v in policy.specific.versions))
        missing = [v for v in wanted if v not in available]
        if missing:
            raise InvalidArgument(
                f"failed to load '{config.name}': version_policy asks for versions {missing}, "
                f"available are {available}"
            )
        return wanted
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions > 0 else 1
    return available[-count:]


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _close_all(hosts: Any) -> None:
    for host in hosts:
        host.close()


def _close_model(model: LoadedModel, cache: ArtifactCache | None) -> None:
    """Stop its hosts (each waits for an execution it is running), then hand its files to
    the cache, or remove them."""
    _close_all(v.runtime for v in model.versions.values())
    if model.workdir is None:
        return
    if cache is not None and model.digest is not None:
        cache.admit(model.digest, model.workdir)
    else:
        shutil.rmtree(model.workdir, ignore_errors=True)
