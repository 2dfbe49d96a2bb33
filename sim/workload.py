"""Seeded request workloads for the simulator: which model is asked for, and when.

A ``Workload`` is its models (each with a profile, a tenant and an SLO) and a lazy,
time-ordered stream of ``Arrival``s over ``duration_s`` simulated seconds. Streams are
generated a window (a minute) at a time with numpy and then yielded, so an hour of
10,000 models at thousands of requests a second never sits in memory, and the same
seed gives the same trace every time it is iterated.

Generators:
- ``azure_like``: shaped like the Azure Functions 2019 trace (Shahrad et al., "Serverless
  in the Wild", USENIX ATC'20): functions mapped to models, per-function popularity
  lognormal over many orders of magnitude (the paper's Fig. 5), per-minute rate changes
  (a diurnal swing and minute-to-minute noise), bursts, timer-triggered functions that
  fire on a period, a few tenants owning many models.
- ``poisson_workload`` / ``gamma_workload``: Zipf popularity over the models and, per
  model, Poisson arrivals or a Gamma renewal process of a chosen coefficient of variation
  (AlpaServe, OSDI'23, Sec. 6, drove its evaluation with Gamma arrivals of tunable rate
  and CV), with an optional popularity shift (a new ranking) at half-time.
- ``sim.azure_trace.from_azure_csv``: the real trace's CSV files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from sim.profiles import V100_PROFILES, Profile

DEFAULT_SLO_MULTIPLE = 10.0
"""An SLO is this many times the model's batch-1 execute time ..."""
DEFAULT_SLO_FLOOR_S = 0.1
"""... and never below this (100 ms, Clockwork's and the issue's target for GPU runs)."""
WINDOW_S = 60.0


@dataclass(frozen=True)
class SimModel:
    name: str
    tenant: str
    profile: Profile
    slo_s: float


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float       # simulated seconds from the start
    model: int     # index into Workload.models
    rows: int = 1


@dataclass(frozen=True, slots=True)
class ArrivalChunk:
    """One window's arrivals as arrays, time-ordered (``rows`` None: one row each)."""

    t: np.ndarray
    model: np.ndarray
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.t)


ChunkSource = Callable[[], Iterator[ArrivalChunk]]


@dataclass
class Workload:
    models: list[SimModel]
    duration_s: float
    description: str
    source: ChunkSource | None = field(default=None, repr=False, compare=False)
    mean_rate: float = 0.0                 # requested mean requests per second, all models
    model_rates: np.ndarray | None = field(default=None, repr=False, compare=False)  # mean req/s per model

    def chunks(self) -> Iterator[ArrivalChunk]:
        """The arrivals a window at a time, as numpy arrays (the fast way to consume them)."""
        if self.source is None:
            return iter(())
        return self.source()

    def arrivals(self) -> Iterator[Arrival]:
        """Time-ordered arrivals, generated lazily a window at a time; same seed, same trace."""
        for chunk in self.chunks():
            if chunk.rows is None:
                yield from map(Arrival, chunk.t.tolist(), chunk.model.tolist())
            else:
                yield from map(Arrival, chunk.t.tolist(), chunk.model.tolist(), chunk.rows.tolist())


# --- models --------------------------------------------------------------------------------

def slo_for(profile: Profile, multiple: float = DEFAULT_SLO_MULTIPLE, floor_s: float = DEFAULT_SLO_FLOOR_S) -> float:
    """A model's SLO: ``multiple`` x its batch-1 execute time, at least ``floor_s``."""
    return max(floor_s, multiple * profile.exec_at(1))


def build_models(n_models: int, rng: np.random.Generator, *, profiles: Sequence[Profile] | None = None,
                 tenants: int = 1, tenant_skew: float = 1.0, slo_s: float | None = None,
                 slo_multiple: float = DEFAULT_SLO_MULTIPLE, slo_floor_s: float = DEFAULT_SLO_FLOOR_S,
                 profile_of: np.ndarray | None = None) -> list[SimModel]:
    """``n_models`` models, each a profile drawn uniformly from ``profiles`` (or the given
    ``profile_of`` index per model) and a tenant: every tenant owns at least one model and
    the rest go to tenant k with weight 1/(k+1)^tenant_skew, so a few tenants own many."""
    if n_models < 1:
        raise ValueError(f"a workload needs at least one model, got {n_models}")
    if tenants < 1:
        raise ValueError(f"a workload needs at least one tenant, got {tenants}")
    profs = tuple(profiles) if profiles else V100_PROFILES
    if profile_of is None:
        profile_of = rng.integers(0, len(profs), size=n_models)
    tenants = min(tenants, n_models)
    w = 1.0 / np.arange(1, tenants + 1) ** tenant_skew
    owner = np.concatenate([np.arange(tenants), rng.choice(tenants, size=n_models - tenants, p=w / w.sum())])
    owner = owner[rng.permutation(n_models)]
    width = len(str(n_models - 1))
    out = []
    for i in range(n_models):
        p = profs[int(profile_of[i])]
        out.append(SimModel(name=f"m{i:0{width}d}", tenant=f"tenant{int(owner[i])}", profile=p,
                            slo_s=slo_s if slo_s is not None else slo_for(p, slo_multiple, slo_floor_s)))
    return out


# --- helpers ------------------------------------------------------------------------------

def zipf_weights(n: int, s: float) -> np.ndarray:
    """Normalised 1/rank^s over ranks 1..n."""
    w = 1.0 / np.arange(1, n + 1, dtype=float) ** s
    return w / w.sum()


def windows(duration_s: float, width_s: float = WINDOW_S, breaks: Sequence[float] = ()) -> Iterator[tuple[float, float]]:
    """[a, b) windows of ``width_s`` covering [0, duration_s), also split at ``breaks``."""
    edges = sorted({*(k * width_s for k in range(int(math.ceil(duration_s / width_s)) + 1)),
                    *(b for b in breaks if 0 < b < duration_s)})
    edges = [e for e in edges if e < duration_s] + [duration_s]
    for a, b in zip(edges, edges[1:], strict=False):
        if b > a:
            yield a, b


def _ordered(t: np.ndarray, m: np.ndarray) -> ArrivalChunk:
    order = np.argsort(t, kind="stable")
    return ArrivalChunk(t=t[order], model=m[order].astype(np.int64, copy=False))


def _check(duration_s: float, rate: float) -> None:
    if not duration_s > 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration_s}")
    if not rate > 0:
        raise ValueError(f"the request rate must be > 0 per second, got {rate}")


def _popularity(n_models: int, zipf_s: float, rng: np.random.Generator, shift: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-model shares before and after the shift: Zipf over a seeded ranking, a new
    ranking after it (the same one without a shift)."""
    w = zipf_weights(n_models, zipf_s)
    before = np.empty(n_models)
    before[rng.permutation(n_models)] = w
    if not shift:
        return before, before
    after = np.empty(n_models)
    after[rng.permutation(n_models)] = w
    return before, after


# --- Poisson and Gamma ----------------------------------------------------------------------

def poisson_workload(n_models: int, duration_s: float, rate: float, seed: int, *, zipf_s: float = 1.0,
                     shift: bool = False, shift_at_s: float | None = None,
                     profiles: Sequence[Profile] | None = None, tenants: int = 1, slo_s: float | None = None,
                     slo_multiple: float = DEFAULT_SLO_MULTIPLE, slo_floor_s: float = DEFAULT_SLO_FLOOR_S,
                     ) -> Workload:
    """Poisson arrivals at ``rate`` per second in all, each a model drawn by Zipf(``zipf_s``)
    popularity; with ``shift``, a new ranking from ``shift_at_s`` (default half-time)."""
    _check(duration_s, rate)
    ss = np.random.SeedSequence(seed)
    models_ss, pop_ss, arr_ss = ss.spawn(3)
    models = build_models(n_models, np.random.default_rng(models_ss), profiles=profiles, tenants=tenants,
                          slo_s=slo_s, slo_multiple=slo_multiple, slo_floor_s=slo_floor_s)
    before, after = _popularity(n_models, zipf_s, np.random.default_rng(pop_ss), shift)
    at = (duration_s / 2 if shift_at_s is None else shift_at_s) if shift else duration_s

    def source() -> Iterator[ArrivalChunk]:
        rng = np.random.default_rng(arr_ss)
        cdfs = (np.cumsum(before), np.cumsum(after))
        for a, b in windows(duration_s, breaks=(at,)):
            cdf = cdfs[1] if a >= at else cdfs[0]
            n = int(rng.poisson(rate * (b - a)))
            t = np.sort(a + rng.random(n) * (b - a))
            m = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), n_models - 1)
            yield ArrivalChunk(t=t, model=m.astype(np.int64))

    rates = rate * (before * min(at, duration_s) + after * max(0.0, duration_s - at)) / duration_s
    desc = (f"Poisson, {n_models} models, {rate:g} req/s, Zipf s={zipf_s:g}"
            + (f", popularity shift at {at:g} s" if shift else "") + f", seed {seed}")
    return Workload(models=models, duration_s=duration_s, description=desc, source=source,
                    mean_rate=rate, model_rates=rates)


def gamma_workload(n_models: int, duration_s: float, rate: float, seed: int, *, cv: float,
                   zipf_s: float = 1.0, shift: bool = False, shift_at_s: float | None = None,
                   profiles: Sequence[Profile] | None = None, tenants: int = 1, slo_s: float | None = None,
                   slo_multiple: float = DEFAULT_SLO_MULTIPLE, slo_floor_s: float = DEFAULT_SLO_FLOOR_S,
                   ) -> Workload:
    """Per model, a Gamma renewal process (inter-arrival coefficient of variation ``cv``;
    1 is Poisson, above 1 burstier) at its Zipf share of ``rate``; with ``shift``, every
    model's process restarts at its new rate from ``shift_at_s`` (default half-time)."""
    _check(duration_s, rate)
    if not cv > 0:
        raise ValueError(f"the coefficient of variation must be > 0, got {cv}")
    ss = np.random.SeedSequence(seed)
    models_ss, pop_ss, arr_ss = ss.spawn(3)
    models = build_models(n_models, np.random.default_rng(models_ss), profiles=profiles, tenants=tenants,
                          slo_s=slo_s, slo_multiple=slo_multiple, slo_floor_s=slo_floor_s)
    before, after = _popularity(n_models, zipf_s, np.random.default_rng(pop_ss), shift)
    at = (duration_s / 2 if shift_at_s is None else shift_at_s) if shift else duration_s
    shape = 1.0 / (cv * cv)

    def source() -> Iterator[ArrivalChunk]:
        rng = np.random.default_rng(arr_ss)
        process = _GammaProcesses(rate * before, shape, 0.0, rng)
        switched = False
        for a, b in windows(duration_s, breaks=(at,)):
            if not switched and a >= at:
                process = _GammaProcesses(rate * after, shape, at, rng)
                switched = True
            t, m = process.until(b)
            yield _ordered(t, m)

    rates = rate * (before * min(at, duration_s) + after * max(0.0, duration_s - at)) / duration_s
    desc = (f"Gamma CV {cv:g}, {n_models} models, {rate:g} req/s, Zipf s={zipf_s:g}"
            + (f", popularity shift at {at:g} s" if shift else "") + f", seed {seed}")
    return Workload(models=models, duration_s=duration_s, description=desc, source=source,
                    mean_rate=rate, model_rates=rates)


class _GammaProcesses:
    """One Gamma renewal process per model, advanced a window at a time: each model's
    next arrival is kept between windows, so inter-arrivals span window edges."""

    def __init__(self, rates: np.ndarray, shape: float, start: float, rng: np.random.Generator) -> None:
        self.rng, self.shape = rng, shape
        live = rates > 0
        self.models = np.nonzero(live)[0]
        self.rates = rates[live]
        self.scale = 1.0 / (self.rates * shape)
        # in equilibrium the first arrival is a uniform point of a length-biased gap, and a
        # length-biased Gamma(k, theta) is Gamma(k + 1, theta)
        first = rng.gamma(shape + 1.0, self.scale) * rng.random(len(self.models))
        self.next_t = start + first

    def until(self, end: float) -> tuple[np.ndarray, np.ndarray]:
        times, owners = [], []
        active = np.nonzero(self.next_t < end)[0]
        while len(active):
            start = self.next_t[active]
            expect = (end - start) * self.rates[active]
            n = np.ceil(expect + 4.0 * np.sqrt(expect / self.shape + 1.0) + 1.0).astype(np.int64)
            seg = np.repeat(np.arange(len(active)), n)
            gaps = self.rng.gamma(self.shape, 1.0, size=int(n.sum())) * np.repeat(self.scale[active], n)
            offs = np.cumsum(n) - n
            cs = np.cumsum(gaps)
            base = np.where(offs > 0, cs[offs - 1], 0.0)
            # candidates per model: next_t, next_t + g1, ..., next_t + g1 + ... + g_n
            later = start[seg] + (cs - base[seg])
            pos = np.arange(len(gaps)) - offs[seg]            # 0.. n-1: later[k] is candidate k+1
            emit_later = later < end
            # a later candidate is emitted when it is before the end and is not the last one drawn
            keep = emit_later & (pos < n[seg] - 1)
            times.append(start)
            owners.append(self.models[active])
            times.append(later[keep])
            owners.append(self.models[active[seg[keep]]])
            # the next arrival: the first candidate at or after the end, else the last drawn
            first_late = np.minimum(np.add.reduceat(emit_later.astype(np.int64), offs), n - 1)
            self.next_t[active] = later[offs + first_late]
            still = self.next_t[active] < end
            active = active[still]
        if not times:
            return np.empty(0), np.empty(0, dtype=np.int64)
        return np.concatenate(times), np.concatenate(owners)


# --- Azure Functions-like ---------------------------------------------------------------------

# Shapes taken from Shahrad et al., ATC'20 (and their public trace's README):
AZURE_SIGMA = 2.3
"""Lognormal sigma of per-function mean rates: Fig. 5(a) spreads daily invocations per
function over ~8 orders of magnitude; sigma 2.3 puts the 0.1%..99.9% range of 10,000
functions across 10^6.2 of expected rate, and the integer counts (most functions fire a
few times an hour or less) stretch what is observed further."""
AZURE_TIMER_FRACTION, AZURE_TIMER_SHARE = 0.16, 0.02
"""The paper's trigger breakdown: timer-triggered functions are ~16% of functions and ~2%
of invocations (they fire on a period here)."""
AZURE_DIURNAL = 0.3
"""The paper's invocations over the week swing with the time of day; +-30% around the
mean here (our choice of amplitude)."""
AZURE_NOISE_SIGMA = 0.4
"""Minute-to-minute lognormal change of each function's rate (our choice): the paper finds
most functions' inter-arrival times far from a constant rate's and burstier than Poisson."""
AZURE_BURST_P, AZURE_BURST_MINUTES, AZURE_BURST_MEDIAN, AZURE_BURST_SIGMA = 0.002, 3.0, 10.0, 0.7
"""Per function and minute, a burst starts with this probability, lasts a geometric
number of minutes (this mean) at a lognormal multiple of the rate (this median, sigma)."""


def azure_like(n_models: int, duration_s: float, mean_rate: float, seed: int, *,
               profiles: Sequence[Profile] | None = None, tenants: int | None = None, slo_s: float | None = None,
               slo_multiple: float = DEFAULT_SLO_MULTIPLE, slo_floor_s: float = DEFAULT_SLO_FLOOR_S,
               sigma: float = AZURE_SIGMA, timer_fraction: float = AZURE_TIMER_FRACTION,
               diurnal: float = AZURE_DIURNAL, noise_sigma: float = AZURE_NOISE_SIGMA,
               burst_p: float = AZURE_BURST_P, start_minute: int = 0) -> Workload:
    """Functions of an Azure-Functions-shaped trace mapped one to one onto ``n_models``
    models, ``mean_rate`` requests per second in all on average. ``tenants`` (default
    one per 50 models) own them with a heavy tail; ``start_minute`` is the time of day
    the run starts (the diurnal swing's phase, minute 0 = its mean, rising)."""
    _check(duration_s, mean_rate)
    tenants = max(1, n_models // 50) if tenants is None else tenants
    ss = np.random.SeedSequence(seed)
    models_ss, shape_ss, arr_ss = ss.spawn(3)
    models = build_models(n_models, np.random.default_rng(models_ss), profiles=profiles, tenants=tenants,
                          tenant_skew=1.0, slo_s=slo_s, slo_multiple=slo_multiple, slo_floor_s=slo_floor_s)
    srng = np.random.default_rng(shape_ss)
    weight = np.exp(srng.normal(0.0, sigma, n_models))
    timer = srng.random(n_models) < timer_fraction
    if timer.all() or not timer.any():
        timer_share = 1.0 if timer.all() else 0.0
    else:
        timer_share = AZURE_TIMER_SHARE
    rates = np.zeros(n_models)
    if timer.any():
        rates[timer] = weight[timer] / weight[timer].sum() * mean_rate * timer_share
    if (~timer).any():
        rates[~timer] = weight[~timer] / weight[~timer].sum() * mean_rate * (1.0 - timer_share)
    period = np.where(timer, 1.0 / np.maximum(rates, 1e-12), np.inf)
    phase = srng.random(n_models) * np.minimum(period, 86400.0)
    burst_mean_mult = AZURE_BURST_MEDIAN * math.exp(AZURE_BURST_SIGMA ** 2 / 2)
    inflation = 1.0 + burst_p * AZURE_BURST_MINUTES * (burst_mean_mult - 1.0)
    pois = np.nonzero(~timer)[0]
    base = rates[pois] / inflation
    tix = np.nonzero(timer)[0]

    def source() -> Iterator[ArrivalChunk]:
        rng = np.random.default_rng(arr_ss)
        burst_left = np.zeros(len(pois), dtype=np.int64)
        burst_mult = np.ones(len(pois))
        for a, b in windows(duration_s):
            minute = start_minute + int(a // WINDOW_S)
            w = b - a
            day = 1.0 + diurnal * math.sin(2 * math.pi * minute / 1440.0)
            start = (burst_left == 0) & (rng.random(len(pois)) < burst_p)
            k = int(start.sum())
            if k:
                burst_left[start] = rng.geometric(1.0 / AZURE_BURST_MINUTES, k)
                burst_mult[start] = AZURE_BURST_MEDIAN * np.exp(rng.normal(0.0, AZURE_BURST_SIGMA, k))
            mult = np.where(burst_left > 0, burst_mult, 1.0)
            noise = np.exp(rng.normal(-noise_sigma ** 2 / 2, noise_sigma, len(pois)))
            counts = rng.poisson(base * day * noise * mult * w)
            burst_left = np.maximum(burst_left - 1, 0)
            m = np.repeat(pois, counts)
            t = a + rng.random(len(m)) * w
            if len(tix):
                p, ph = period[tix], phase[tix]
                first = np.ceil((a - ph) / p)
                first = np.maximum(first, 0.0)
                n = np.maximum(np.ceil((b - ph) / p) - first, 0).astype(np.int64)
                if n.sum():
                    owner = np.repeat(np.arange(len(tix)), n)
                    k_in = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
                    tt = ph[owner] + (first[owner] + k_in) * p[owner]
                    ok = (tt >= a) & (tt < b)
                    t = np.concatenate([t, tt[ok]])
                    m = np.concatenate([m, tix[owner[ok]]])
            yield _ordered(t, m)

    desc = (f"Azure-Functions-like, {n_models} models ({int(timer.sum())} timer-triggered), {tenants} tenants, "
            f"{mean_rate:g} req/s mean, lognormal sigma {sigma:g}, seed {seed}")
    return Workload(models=models, duration_s=duration_s, description=desc, source=source,
                    mean_rate=mean_rate, model_rates=rates)
