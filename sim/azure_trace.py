"""A reader for the Azure Functions 2019 trace's CSV files, as a simulator ``Workload``.

Format and mapping are documented for operators in ``sim/TRACE.md``. In short: each
``invocations_per_function_md.anon.dNN.csv`` has a header ``HashOwner,HashApp,
HashFunction,Trigger,1,2,...,1440`` and one row per function with its invocations per
minute. Files given together are consecutive days. Functions become models by ``top``
(the N most invoked, one model each) or ``hash`` (every function hashed onto N models,
their counts summed); each minute's count is spread over that minute. The optional
memory and duration files pick each model's profile by rank.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.profiles import V100_PROFILES, Profile
from sim.workload import (
    DEFAULT_SLO_FLOOR_S,
    DEFAULT_SLO_MULTIPLE,
    ArrivalChunk,
    SimModel,
    Workload,
    slo_for,
)

KEY_FIELDS = ("HashOwner", "HashApp", "HashFunction", "Trigger")
MAPPINGS = ("top", "hash")
SPREADS = ("uniform", "even", "poisson")


class TraceFormatError(ValueError):
    """A trace file that is not in the documented format (the message names file and line)."""


@dataclass(frozen=True)
class TraceFunction:
    owner: str
    app: str
    function: str
    trigger: str


def _open(path: Path):  # noqa: ANN202 - a text file object
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rt", newline="", encoding="utf-8")
        return path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot be read: {exc.strerror or exc}") from None


def _header_minutes(path: Path, header: list[str]) -> int:
    if [h.strip() for h in header[:4]] != list(KEY_FIELDS):
        raise TraceFormatError(f"{path}, line 1: the header must start with {','.join(KEY_FIELDS)} "
                               f"(an invocations_per_function_md file), got {','.join(header[:4]) or 'nothing'}")
    minutes = header[4:]
    if not minutes or [m.strip() for m in minutes] != [str(k) for k in range(1, len(minutes) + 1)]:
        raise TraceFormatError(f"{path}, line 1: after {KEY_FIELDS[-1]} the header must number the "
                               f"minutes 1,2,...,N (1440 in the published trace)")
    return len(minutes)


def _rows(path: Path) -> Iterator[tuple[int, TraceFunction, list[str], int]]:
    """(line number, function, its count fields, minutes per row) for each row of one file."""
    with _open(path) as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise TraceFormatError(f"{path}, line 1: the file is empty; expected a header "
                                   f"{','.join(KEY_FIELDS)},1,...,1440") from None
        except csv.Error as exc:
            raise TraceFormatError(f"{path}, line 1: not CSV: {exc}") from None
        minutes = _header_minutes(path, header)
        try:
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != 4 + minutes:
                    raise TraceFormatError(f"{path}, line {line}: {len(row)} fields, the header has "
                                           f"{4 + minutes} (4 ids and {minutes} minutes)")
                yield line, TraceFunction(*row[:4]), row[4:], minutes
        except csv.Error as exc:
            raise TraceFormatError(f"{path}, line {reader.line_num}: not CSV: {exc}") from None


def _counts(path: Path, line: int, fields: list[str]) -> np.ndarray:
    try:
        out = np.array(fields, dtype=np.int32)
    except ValueError:
        for k, f in enumerate(fields, start=1):
            try:
                int(f)
            except ValueError:
                raise TraceFormatError(f"{path}, line {line}: minute {k} holds {f!r}, not a whole "
                                       f"number of invocations") from None
        raise
    if (out < 0).any():
        k = int(np.argmax(out < 0)) + 1
        raise TraceFormatError(f"{path}, line {line}: minute {k} holds {out[k - 1]}, a negative count")
    return out


@dataclass(frozen=True)
class Trace:
    """Per-minute counts of the functions kept, over the minutes kept."""

    functions: list[TraceFunction]
    counts: np.ndarray            # (functions, minutes), int32: keep the window small for 10k functions
    first_minute: int             # minute index (from the first file's start) of column 0


def read_invocations(paths: Sequence[str | Path], *, keep: int | None = None, n_buckets: int | None = None,
                     seed: int = 0, minutes: tuple[int, int] | None = None) -> Trace:
    """Read invocation files (consecutive days, in order). ``keep``: only the ``keep``
    functions with the most invocations in the window (two passes, little memory);
    ``n_buckets``: every function hashed onto that many rows, counts summed (the row's
    function is the most invoked one hashed there); neither: every function.
    ``minutes``: [first, last) minute window counted from the first file's start."""
    files = [Path(p) for p in paths]
    if not files:
        raise TraceFormatError("no trace files given: pass invocations_per_function_md.anon.dNN.csv paths")
    lo, hi = minutes if minutes is not None else (0, None)

    # each file's minutes (headers only), so the window is known before any row is read
    file_minutes = []
    for path in files:
        with _open(path) as fh:
            try:
                file_minutes.append(_header_minutes(path, next(csv.reader(fh))))
            except StopIteration:
                raise TraceFormatError(f"{path}, line 1: the file is empty; expected a header "
                                       f"{','.join(KEY_FIELDS)},1,...,1440") from None
    total = sum(file_minutes)
    end = total if hi is None else hi
    if not 0 <= lo < end <= total:
        raise TraceFormatError(f"minute window [{lo}, {end}) is outside the trace's {total} minutes")

    def rows_in_window() -> Iterator[tuple[Path, int, TraceFunction, list[str], int]]:
        offset = 0
        for path, per_file in zip(files, file_minutes, strict=True):
            start, stop = max(lo - offset, 0), min(end - offset, per_file)
            if stop > start:
                for line, fn, fields, _ in _rows(path):
                    yield path, line, fn, fields[start:stop], offset + start
            offset += per_file

    width = end - lo

    def key(fn: TraceFunction) -> tuple[str, str, str]:
        return fn.owner, fn.app, fn.function

    if n_buckets is not None:
        counts = np.zeros((n_buckets, width), dtype=np.int32)
        best: dict[int, tuple[int, TraceFunction]] = {}
        for path, line, fn, fields, at in rows_in_window():
            c = _counts(path, line, fields)
            b = _bucket(key(fn), n_buckets, seed)
            counts[b, at - lo:at - lo + len(c)] += c
            s = int(c.sum())
            if b not in best or s > best[b][0]:
                best[b] = (s, fn)
        filler = TraceFunction("-", "-", "-", "-")
        return Trace([best[b][1] if b in best else filler for b in range(n_buckets)], counts, lo)

    totals: dict[tuple[str, str, str], int] = {}
    if keep is not None:
        for path, line, fn, fields, _ in rows_in_window():
            totals[key(fn)] = totals.get(key(fn), 0) + int(_counts(path, line, fields).sum())
        chosen = sorted(totals, key=lambda k: (-totals[k], k))[:keep]
        wanted = {k: i for i, k in enumerate(chosen)}
    rows: dict[tuple[str, str, str], int] = {}
    fns: list[TraceFunction] = []
    blocks: list[np.ndarray] = []
    for path, line, fn, fields, at in rows_in_window():
        k = key(fn)
        if keep is not None and k not in wanted:
            continue
        c = _counts(path, line, fields)
        if k not in rows:
            rows[k] = len(fns)
            fns.append(fn)
            blocks.append(np.zeros(width, dtype=np.int32))
        blocks[rows[k]][at - lo:at - lo + len(c)] += c
    if keep is not None:  # in rank order
        order = sorted(range(len(fns)), key=lambda i: wanted[key(fns[i])])
        fns, blocks = [fns[i] for i in order], [blocks[i] for i in order]
    counts = np.vstack(blocks) if blocks else np.zeros((0, width), dtype=np.int32)
    return Trace(fns, counts, lo)


def _bucket(key: tuple[str, str, str], n: int, seed: int) -> int:
    h = hashlib.blake2b("\x1f".join(key).encode(), digest_size=8, key=str(seed).encode())
    return int.from_bytes(h.digest(), "little") % n


def read_app_memory(paths: Sequence[str | Path]) -> dict[tuple[str, str], float]:
    """(owner, app) -> mean AverageAllocatedMb over the ``app_memory_percentiles`` files given."""
    sums: dict[tuple[str, str], list[float]] = {}
    for path in map(Path, paths):
        for line, row in _dict_rows(path, ("HashOwner", "HashApp", "AverageAllocatedMb")):
            sums.setdefault((row["HashOwner"], row["HashApp"]), []).append(
                _number(path, line, "AverageAllocatedMb", row["AverageAllocatedMb"]))
    return {k: sum(v) / len(v) for k, v in sums.items()}


def read_durations(paths: Sequence[str | Path]) -> dict[tuple[str, str, str], float]:
    """(owner, app, function) -> mean Average execution ms over the ``function_durations_percentiles`` files."""
    sums: dict[tuple[str, str, str], list[float]] = {}
    for path in map(Path, paths):
        for line, row in _dict_rows(path, ("HashOwner", "HashApp", "HashFunction", "Average")):
            sums.setdefault((row["HashOwner"], row["HashApp"], row["HashFunction"]), []).append(
                _number(path, line, "Average", row["Average"]))
    return {k: sum(v) / len(v) for k, v in sums.items()}


def _dict_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    with _open(path) as fh:
        reader = csv.DictReader(fh)
        missing = [f for f in required if f not in (reader.fieldnames or [])]
        if missing:
            raise TraceFormatError(f"{path}, line 1: the header lacks {', '.join(missing)}")
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise TraceFormatError(f"{path}, line {reader.line_num}: the row's fields do not match the header")
            yield reader.line_num, row


def _number(path: Path, line: int, column: str, value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise TraceFormatError(f"{path}, line {line}: {column} holds {value!r}, not a number") from None
    if not math.isfinite(v) or v < 0:
        raise TraceFormatError(f"{path}, line {line}: {column} holds {value!r}, not a number >= 0")
    return v


def _by_rank(values: np.ndarray, profiles: Sequence[Profile], key) -> np.ndarray:  # noqa: ANN001
    """Profile index per model: the model's quantile among ``values`` picks the profile at
    the same quantile of ``profiles`` ordered by ``key`` (NaN: the median profile)."""
    order = sorted(range(len(profiles)), key=lambda i: key(profiles[i]))
    vals = np.where(np.isnan(values), np.nanmedian(values) if np.isfinite(values).any() else 0.0, values)
    ranks = np.argsort(np.argsort(vals, kind="stable"), kind="stable")
    q = (ranks + 0.5) / max(len(vals), 1)
    return np.array([order[min(int(x * len(order)), len(order) - 1)] for x in q], dtype=np.int64)


def from_azure_csv(paths: Sequence[str | Path], n_models: int, seed: int, *, time_scale: float = 1.0,
                   mapping: str = "top", spread: str = "uniform", rate_scale: float = 1.0,
                   minutes: tuple[int, int] | None = None, profiles: Sequence[Profile] | None = None,
                   memory_paths: Sequence[str | Path] = (), duration_paths: Sequence[str | Path] = (),
                   slo_s: float | None = None, slo_multiple: float = DEFAULT_SLO_MULTIPLE,
                   slo_floor_s: float = DEFAULT_SLO_FLOOR_S) -> Workload:
    """A ``Workload`` from the real trace's invocation files (see ``sim/TRACE.md``).

    ``time_scale``: simulated seconds per trace second (0.1 plays a trace minute in 6 s,
    ten times the rate). ``rate_scale``: every count multiplied by it (fractions kept at
    random). ``spread``: ``uniform`` (a minute's count at uniform random times in it),
    ``even`` (equally spaced) or ``poisson`` (a Poisson number with the count as its
    mean, at uniform times). Each model's tenant is its function's owner."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {', '.join(MAPPINGS)}, got {mapping!r}")
    if spread not in SPREADS:
        raise ValueError(f"spread must be one of {', '.join(SPREADS)}, got {spread!r}")
    if not time_scale > 0 or not rate_scale > 0:
        raise ValueError("time_scale and rate_scale must be > 0")
    if n_models < 1:
        raise ValueError(f"n_models must be >= 1, got {n_models}")
    if mapping == "top":
        trace = read_invocations(paths, keep=n_models, minutes=minutes)
    else:
        trace = read_invocations(paths, n_buckets=n_models, seed=seed, minutes=minutes)
    if not trace.functions:
        raise TraceFormatError(f"no functions with invocations in {', '.join(map(str, paths))}")
    profs = tuple(profiles) if profiles else V100_PROFILES
    n = len(trace.functions)
    if memory_paths:
        mem = read_app_memory(memory_paths)
        values = np.array([mem.get((f.owner, f.app), np.nan) for f in trace.functions])
        profile_of = _by_rank(values, profs, lambda p: p.bytes)
        sized = "profiles by app memory rank"
    elif duration_paths:
        dur = read_durations(duration_paths)
        values = np.array([dur.get((f.owner, f.app, f.function), np.nan) for f in trace.functions])
        profile_of = _by_rank(values, profs, lambda p: p.exec_at(1))
        sized = "profiles by function duration rank"
    else:
        profile_of = np.array([_bucket((f.owner, f.app, f.function), len(profs), seed)
                               for f in trace.functions], dtype=np.int64)
        sized = "profiles by hash"
    width = len(str(max(n - 1, 0)))
    models = []
    for i, f in enumerate(trace.functions):
        p = profs[int(profile_of[i])]
        models.append(SimModel(name=f"f{i:0{width}d}-{f.function[:8]}", tenant=f"owner-{f.owner[:8]}", profile=p,
                               slo_s=slo_s if slo_s is not None else slo_for(p, slo_multiple, slo_floor_s)))
    minute_s = 60.0 * time_scale
    n_minutes = trace.counts.shape[1]
    counts = trace.counts

    def source() -> Iterator[ArrivalChunk]:
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        for k in range(n_minutes):
            c = counts[:, k]
            if spread == "poisson":
                c = rng.poisson(c * rate_scale)
            elif rate_scale != 1.0:
                scaled = c * rate_scale
                c = np.floor(scaled).astype(np.int64) + (rng.random(len(c)) < scaled % 1.0)
            total = int(c.sum())
            a = k * minute_s
            m = np.repeat(np.arange(len(c)), c)
            if spread == "even":
                j = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
                t = a + (j + 0.5) / np.repeat(c, c) * minute_s
            else:
                t = a + rng.random(total) * minute_s
            order = np.argsort(t, kind="stable")
            yield ArrivalChunk(t=t[order], model=m[order].astype(np.int64))

    duration = n_minutes * minute_s
    per_model = counts.sum(axis=1) * rate_scale / duration
    desc = (f"Azure Functions trace ({len(list(paths))} file(s), minutes {trace.first_minute}.."
            f"{trace.first_minute + n_minutes}), {n} models by {mapping}, spread {spread}, "
            f"time x{time_scale:g}, rate x{rate_scale:g}, {sized}, seed {seed}")
    return Workload(models=models, duration_s=duration, description=desc, source=source,
                    mean_rate=float(per_model.sum()), model_rates=per_model)
