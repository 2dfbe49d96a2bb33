"""The simulator: inferplex's own decision cores at cluster scale on a virtual clock.

``sim.runner.run`` drives the production ``admission.scheduler.Scheduler``,
``placement.planner.Planner`` and ``profiler.predictor.LatencyPredictor`` (the very
classes the control plane imports, no copies) against simulated instances
(``sim.instances``) in a discrete-event engine (``sim.engine``), over workloads from
``sim.workload`` / ``sim.azure_trace`` with model profiles from ``sim.profiles``;
``sim.report`` writes the results folder and ``sim.cli`` is ``inferplex sim``.
"""
