"""Where a new model is profiled, and how much memory it takes before a profile says.

Pure: a snapshot of instances in, a plan out. Where tenants' models are placed is the
planner's (``placement/planner.py``); profiling looks for an instance their traffic leaves
idle, so the timings it measures are undisturbed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InstanceSnapshot:
    instance_id: str
    capacity_bytes: int
    used_bytes: int
    healthy: bool = True
    # models already loaded (qualified names); a model already there needs no room
    models: frozenset[str] = frozenset()
    instance_class: str = "cpu"
    # tenant platforms it serves (placement/backends.py); None: not known yet, so not ruled out
    platforms: frozenset[str] | None = None

    def serves(self, platform: str | None) -> bool:
        return platform is None or self.platforms is None or platform in self.platforms

    @property
    def free_bytes(self) -> int:
        return max(0, self.capacity_bytes - self.used_bytes)


@dataclass(frozen=True, slots=True)
class PlacementPlan:
    instance_id: str | None
    reason: str = ""
    already_loaded: bool = False
    # for profiling plans: the instance serves no tenant model, so timings are undisturbed
    idle: bool = False

    @property
    def placed(self) -> bool:
        return self.instance_id is not None


def estimate_model_bytes(file_bytes: int) -> int:
    """Resident memory of a loaded model, before a profile says better: runtimes keep
    the weights plus workspace, so twice the file size (and at least 1 MiB)."""
    return max(2 * file_bytes, 1 << 20)


def choose_profiling_instance(model_bytes: int, instances: list[InstanceSnapshot],
                              instance_class: str | None = None,
                              platform: str | None = None) -> PlacementPlan:
    """Where to profile a model (of ``instance_class``, when given, on one that serves
    ``platform``) without disturbing tenants' traffic: an idle instance (no tenant models)
    with room, else the instance with room that serves the fewest models (the plan says it
    is not idle)."""
    fits = [i for i in instances if i.healthy and i.free_bytes >= model_bytes and i.serves(platform)
            and (instance_class is None or i.instance_class == instance_class)]
    if not fits:
        where = f" of class {instance_class!r}" if instance_class else ""
        return PlacementPlan(None, f"no healthy instance{where} has {model_bytes} bytes free to profile on")
    idle = [i for i in fits if not i.models]
    if idle:
        best = max(idle, key=lambda i: i.free_bytes)
        return PlacementPlan(best.instance_id, idle=True)
    best = min(fits, key=lambda i: (len(i.models), -i.free_bytes))
    return PlacementPlan(best.instance_id, idle=False)

