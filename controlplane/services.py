"""Everything the control plane's routes and servers need, built once in the lifespan.

No module-level singletons: ``build_services`` constructs these from ``Settings``
and ``app.state.services`` carries them; tests build their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controlplane.settings import Settings
from placement.ports import PlacementSettings

if TYPE_CHECKING:
    from controlplane.artifacts import ArtifactStore
    from controlplane.catalog import ModelCatalog
    from controlplane.gateway import Gateway
    from controlplane.metrics import Metrics
    from placement.instances import InstanceRegistry
    from placement.reconcile import PlacementReconciler
    from placement.service import PlacementService
    from profiler.predictor import LatencyPredictor
    from store.base import StateStore
    from tenants.service import TenantService

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: StateStore
    tenants: TenantService
    artifacts: ArtifactStore
    catalog: ModelCatalog
    instances: InstanceRegistry
    placement: PlacementService
    predictor: LatencyPredictor
    gateway: Gateway
    metrics: Metrics
    # leader-elected reconcile loop (issue 4); every replica runs one, only the leader acts
    reconciler: PlacementReconciler
    # set when this process created the first admin key (printed once by `inferplex up`)
    new_admin_key: str | None = None


def placement_settings(settings: Settings) -> PlacementSettings:
    """The numbers placement acts on, from the control plane's settings."""
    return PlacementSettings(profile_on_upload=settings.profile_on_upload,
                             profile_exec_timeout_s=settings.profile_exec_timeout_s,
                             stats_poll_interval_s=settings.stats_poll_interval_s,
                             placement_policy=settings.placement_policy,
                             placement_evict_margin=settings.placement_evict_margin,
                             replica_id=settings.replica_id)


async def build_services(settings: Settings) -> Services:
    from controlplane.artifacts import ArtifactStore
    from controlplane.catalog import ModelCatalog
    from controlplane.gateway import Gateway
    from controlplane.metrics import Metrics
    from placement.instances import InstanceRegistry
    from placement.reconcile import PlacementReconciler
    from placement.service import PlacementService
    from profiler.predictor import LatencyPredictor, PredictorConfig
    from store import open_store
    from tenants.service import TenantService

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store_url, settings.data_dir)
    metrics = Metrics()
    artifacts = ArtifactStore(settings.artifacts_path)
    tenants = TenantService(store)
    catalog = ModelCatalog(store, artifacts, settings)
    predictor = LatencyPredictor(
        PredictorConfig(window=settings.predictor_window, percentile=settings.predictor_percentile)
    )
    instances = InstanceRegistry(store, credential=settings.instance_credential,
                                 request_timeout_s=settings.request_timeout_s)
    placement = PlacementService(store, instances, catalog, predictor, metrics,
                                 placement_settings(settings))
    placement.memory_shares = tenants.memory_shares
    gateway = Gateway(tenants, catalog, placement, instances, predictor, metrics, settings)
    reconciler = PlacementReconciler(
        store, instances, placement, catalog, identity=settings.replica_id,
        leader_ttl_s=settings.leader_lease_ttl_s,
    )
    services = Services(
        settings=settings, store=store, tenants=tenants, artifacts=artifacts, catalog=catalog,
        instances=instances, placement=placement, predictor=predictor, gateway=gateway, metrics=metrics,
        reconciler=reconciler,
    )
    # order matters: caches first (tenants, catalog), then instances, then placement loops
    await tenants.start()
    services.new_admin_key = await tenants.ensure_admin_key(settings.bootstrap_admin_key)
    await catalog.start()
    await instances.start()
    await placement.start()
    await reconciler.start()
    return services


async def close_services(services: Services) -> None:
    try:
        await services.reconciler.close()  # resigns: another replica leads at once
    except Exception:
        log.exception("error closing the reconciler")
    for part in (services.placement, services.instances, services.catalog, services.tenants):
        try:
            await part.close()
        except Exception:  # closing must reach the store even if one part fails
            log.exception("error closing %s", type(part).__name__)
    await services.store.close()
