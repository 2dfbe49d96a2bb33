"""The worker's model repository: what is loaded, in which state, and how loads happen.

Loads and unloads are serialized (one at a time, in a helper thread) so the RSS
delta around a load belongs to that load alone and the event loop keeps serving.
A load builds the new model completely before it replaces anything; if any step
fails, nothing of it stays loaded or charged, and the index shows the model
UNAVAILABLE with the reason (like Triton). A reload that fails leaves the
previous version serving.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from kserve.datatypes import V2_TO_NUMPY
from kserve.errors import InvalidArgument, NotFound
from worker import config as cfg
from worker.memory import MemoryBudget, rss_bytes
from worker.runtimes import Runtime, import_runtime, open_runtime
from worker.runtimes.safety import check_onnx
from worker.stats import ModelStats

log = logging.getLogger(__name__)

READY, UNAVAILABLE, LOADING = "READY", "UNAVAILABLE", "LOADING"


@dataclass
class LoadedVersion:
    version: int
    runtime: Runtime
    stats: ModelStats = field(default_factory=ModelStats)


@dataclass
class LoadedModel:
    config: mc.ModelConfig
    spec: cfg.ModelSpec
    versions: dict[int, LoadedVersion]
    workdir: Path | None  # private temp dir for file loads; removed on unload or reload
    charged_bytes: int
    load_seconds: float

    @property
    def latest(self) -> LoadedVersion:
        return self.versions[max(self.versions)]


@dataclass
class ModelEntry:
    name: str
    state: str = UNAVAILABLE
    reason: str = ""
    model: LoadedModel | None = None


@dataclass(frozen=True, slots=True)
class IndexRow:
    name: str
    version: str
    state: str
    reason: str


class ModelRepository:
    def __init__(self, budget: MemoryBudget, *, directory: Path | None = None,
                 device: str = "cpu", threads: int = 1) -> None:
        self.budget = budget
        self.directory = directory
        self.device = device
        self.threads = threads
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
                rows.extend(IndexRow(name, str(v), entry.state, entry.reason) for v in sorted(model.versions))
            elif not ready_only:
                rows.append(IndexRow(name, "", entry.state, entry.reason))
        return rows

    # ------------------------------------------------------------------ load / unload

    async def load(self, name: str, config_json: str | None = None,
                   files: dict[str, bytes] | None = None) -> LoadedModel:
        if not name or "/" in name or name in (".", ".."):
            raise InvalidArgument(f"invalid model name {name!r}")
        async with self._lock:
            entry = self.entries.setdefault(name, ModelEntry(name))
            previous = entry.model
            if previous is None:
                entry.state, entry.reason = LOADING, ""
            try:
                model = await asyncio.to_thread(self._build, name, config_json, files or {},
                                                previous.charged_bytes if previous else 0)
            except Exception as exc:
                reason = getattr(exc, "message", None) or f"{exc.__class__.__name__}: {exc}"
                if previous is None and isinstance(exc, NotFound):
                    del self.entries[name]  # nothing by that name exists anywhere
                elif previous is None:
                    entry.state, entry.reason = UNAVAILABLE, reason
                log.warning("load of '%s' failed: %s", name, reason)
                raise
            # One swap: a lookup on another thread (the gRPC server's) sees the old model or
            # the new one, never a half-torn one. Requests already running hold their own
            # LoadedVersion; the old runtimes go when the last of them finishes.
            self.budget.charge(name, model.charged_bytes)  # replaces the previous charge
            entry.model, entry.state, entry.reason = model, READY, ""
            if previous is not None and previous.workdir is not None:
                shutil.rmtree(previous.workdir, ignore_errors=True)
            log.info("loaded '%s' versions %s in %.3fs, charged %d bytes (%d of %d used)",
                     name, sorted(model.versions), model.load_seconds, model.charged_bytes,
                     self.budget.used, self.budget.budget)
            return model

    async def unload(self, name: str) -> None:
        async with self._lock:
            entry = self.entries.get(name)
            if entry is None:
                if name in self.directory_models():
                    return  # Triton answers success for a known, not loaded model
                raise NotFound(f"failed to unload '{name}', no version is available")
            old = entry.model
            entry.model, entry.state, entry.reason = None, UNAVAILABLE, "unloaded"
            if old is not None:
                self.budget.release(name)
                if old.workdir is not None:
                    shutil.rmtree(old.workdir, ignore_errors=True)
            del old  # so the collection below can free its runtimes
            await asyncio.to_thread(gc.collect)
            log.info("unloaded '%s' (%d of %d bytes used)", name, self.budget.used, self.budget.budget)

    # ------------------------------------------------------------------ building (helper thread)

    def _build(self, name: str, config_json: str | None, files: dict[str, bytes],
               releasing: int) -> LoadedModel:
        t0 = time.monotonic()
        workdir: Path | None = None
        try:
            if files:
                workdir = Path(tempfile.mkdtemp(prefix=f"inferplex-{name}-"))
                model_dir = workdir
                _write_files(model_dir, files, name)
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
            if platform == cfg.ONNX:
                graphs = {v: check_onnx(p, name) for v, p in paths.items()}
                cfg.complete_from_onnx(config, graphs[versions[-1]].graph)
                del graphs
            spec = cfg.spec_of(config)
            import_runtime(platform)
            gc.collect()
            rss_before = rss_bytes()
            loaded: dict[int, LoadedVersion] = {}
            for version, path in paths.items():
                runtime = open_runtime(path, spec, self.device, self.threads)
                _warm_up(runtime, spec)
                loaded[version] = LoadedVersion(version, runtime)
            measured = rss_bytes() - rss_before
            charged = max(measured, estimate)
            try:
                self.budget.check(name, charged, releasing)
            except Exception:
                loaded.clear()
                raise
            log.info("'%s': RSS grew %d bytes during load, files are %d bytes", name, measured, estimate)
            return LoadedModel(config, spec, loaded, workdir, charged, time.monotonic() - t0)
        except BaseException:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            gc.collect()  # a failed load frees what it allocated before the next one is measured
            raise

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


def _warm_up(runtime: Runtime, spec: cfg.ModelSpec) -> None:
    """One run with the smallest inputs, so lazily allocated runtime memory is measured
    with the load. Best effort: a model may legitimately reject size-1 dims."""
    inputs: dict[str, np.ndarray] = {}
    for t in spec.inputs:
        shape = [1 if d < 0 else d for d in t.full_shape(spec.max_batch_size)]  # batch of 1
        dtype = V2_TO_NUMPY[t.datatype]
        if t.datatype == "BYTES":
            array = np.full(shape, b"", dtype=np.object_)
        else:
            array = np.zeros(shape, dtype=dtype)
        inputs[t.name] = array
    try:
        runtime.run(inputs, [t.name for t in spec.outputs])
    except Exception as exc:
        log.warning("warm-up run of '%s' failed (the load continues): %s", spec.name, exc)

