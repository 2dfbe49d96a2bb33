"""Which platforms an instance serves (from its backends), the ONNX adapter's config and
files, Triton's GPU memory from its metrics text, and placement by platform."""

from __future__ import annotations

from placement.backends import ADAPTER_SOURCE, Backends, adapt_onnx, backend_missing, platform_of
from placement.profiling_site import InstanceSnapshot, choose_profiling_instance
from placement.reconcile import DesiredPlacement, plan_reconcile
from placement.triton_driver import gpu_memory_used

ONNX, TORCH = "onnxruntime_onnx", "pytorch_libtorch"


def test_refusals_that_mean_a_missing_backend_are_told_from_other_load_errors() -> None:
    assert backend_missing("load failed for model 'p': version 1 is at UNAVAILABLE state: Invalid "
                           "argument: unable to find backend library for backend 'onnxruntime', try ...")
    assert backend_missing("failed to load 'p': unsupported platform/backend 'python'; this worker runs ...")
    assert not backend_missing("failed to load 'p': model file(s) ['1/model.onnx'] not found")
    assert not backend_missing("Internal: RuntimeError: inferplex backend probe: not a model")


def test_python_only_triton_serves_onnx_through_the_adapter_and_no_torchscript() -> None:
    python_only = Backends(frozenset({"python"}))
    assert python_only.platforms() == {ONNX}
    assert python_only.adapted(ONNX) and not python_only.adapted(TORCH)
    full = Backends(frozenset({"onnxruntime", "pytorch", "python"}))
    assert full.platforms() == {ONNX, TORCH} and not full.adapted(ONNX)
    assert Backends(frozenset()).platforms() == frozenset()


def test_adapted_onnx_keeps_its_tensors_and_gains_the_adapter_per_version() -> None:
    config = {"name": "acme__m", "platform": ONNX, "max_batch_size": 8,
              "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
              "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}],
              "parameters": {"inferplex_batching": {"string_value": "off"}}}
    adapted, files = adapt_onnx(config, {"3/model.onnx": b"onnx"})
    assert adapted["backend"] == "python" and "platform" not in adapted
    assert (adapted["input"], adapted["output"], adapted["max_batch_size"]) == \
        (config["input"], config["output"], 8)
    assert "dynamic_batching" not in adapted  # the control plane batches
    assert adapted["parameters"]["inferplex_onnx_file"] == {"string_value": "model.onnx"}
    assert adapted["parameters"]["inferplex_batching"] == {"string_value": "off"}
    assert files == {"3/model.onnx": b"onnx", "3/model.py": ADAPTER_SOURCE.read_bytes()}
    assert platform_of(config) == ONNX and platform_of({"backend": "pytorch"}) == TORCH


def test_gpu_memory_is_summed_over_gpus_and_absent_without_them() -> None:
    text = ('# HELP nv_gpu_memory_used_bytes GPU used memory, in bytes\n'
            'nv_gpu_memory_used_bytes{gpu_uuid="GPU-a"} 1073741824\n'
            'nv_gpu_memory_used_bytes{gpu_uuid="GPU-b"} 5.36870912e+08\n'
            'nv_gpu_memory_total_bytes{gpu_uuid="GPU-a"} 8.589934592e+10\n')
    assert gpu_memory_used(text) == (1 << 30) + (1 << 29)
    # a CPU-only Triton: only the machine's memory, which says nothing about its models
    assert gpu_memory_used("nv_cpu_memory_used_bytes 1338871808\n") is None


def test_profiling_skips_instances_without_the_models_platform() -> None:
    # (where tenants' models go by platform: test_planner.py's platform tests)
    triton = InstanceSnapshot("ext-t", 1 << 30, 0, platforms=frozenset({ONNX}))
    worker = InstanceSnapshot("worker-0", 1 << 30, 0, platforms=frozenset({ONNX, TORCH}))
    unknown = InstanceSnapshot("new", 1 << 30, 0)  # not probed yet: not ruled out
    assert choose_profiling_instance(10, [triton, worker], platform=TORCH).instance_id == "worker-0"
    assert choose_profiling_instance(10, [triton, unknown], platform=TORCH).instance_id == "new"
    assert not choose_profiling_instance(10, [triton], platform=TORCH).placed


def test_a_placement_its_live_instance_no_longer_serves_is_loaded_again() -> None:
    lost = DesiredPlacement("ext-t", "a__m", "1", 0.0, 5)
    kept = DesiredPlacement("worker-0", "b__m", "1", 0.0, 6)
    plan = plan_reconcile([lost, kept], {"ext-t", "worker-0"}, lambda q, v: True, now=100.0,
                          served={"ext-t": frozenset(), "worker-0": frozenset({"b__m"})})
    assert [(m.qualified, m.load, m.stale) for m in plan.moves] == [("a__m", True, (lost,))]
    # an instance that could not be asked is judged by its record only
    assert plan_reconcile([lost], {"ext-t"}, lambda q, v: True, now=100.0, served={}).empty
