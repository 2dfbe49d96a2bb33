"""Is DNN execution predictable on real hardware? One prepared script for a GPU machine.

Builds a ResNet-50 (plain torch, random weights: no downloads, no torchvision),
exports it as TorchScript (torch.jit.trace) and ONNX (torch.onnx's TorchScript-based
exporter, which works offline; the dynamo exporter needs onnxscript), then through
the worker's own runtime classes (``worker.runtimes.open_runtime``) measures:

- load time, file on host to ready on the device (repeated; the CUDA context is
  created before, so it is not counted);
- execute time per batch size through ``Runtime.run`` (numpy in, numpy out: the
  copies the worker really does), and the spread p99.9 / p50 over thousands of runs.

Writes ``<out>.md`` and ``<out>.png``. A time budget (default 360 s of measuring)
keeps the whole run under 8 minutes on an H200; cells that hit it say so.

    python -m bench.gpu_predictability --device cuda
    python -m bench.gpu_predictability --device cpu --smoke   # tiny CPU run of the same path
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench._common import pyplot

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"


# ---- ResNet-50, written out (He et al. 2016, v1.5: stride on the 3x3) ------------------

class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self.down(x))


class ResNet50(nn.Module):
    """``base=64`` is ResNet-50 (25.6 M parameters); smaller ``base`` narrows every layer."""

    def __init__(self, classes: int = 1000, base: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(base), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        layers: list[nn.Module] = []
        in_ch = base
        for width, blocks, stride in ((base, 3, 1), (2 * base, 4, 2), (4 * base, 6, 2), (8 * base, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(in_ch, width, stride if i == 0 else 1))
                in_ch = width * Bottleneck.expansion
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(in_ch, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


# ---- export ---------------------------------------------------------------------------

INPUT, OUTPUT = "INPUT__0", "OUTPUT__0"


def export(folder: Path, image: int) -> dict[str, Path]:
    torch.manual_seed(0)
    model = ResNet50().eval()
    example = torch.randn(1, 3, image, image)
    paths: dict[str, Path] = {}
    with torch.inference_mode():
        traced = torch.jit.trace(model, example)
    paths["torchscript"] = folder / "model.pt"
    torch.jit.save(traced, str(paths["torchscript"]))
    paths["onnx"] = folder / "model.onnx"
    torch.onnx.export(model, (example,), str(paths["onnx"]), input_names=[INPUT],
                      output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                      opset_version=17, dynamo=False)
    return paths


# ---- the one call into the worker ---------------------------------------------------------

def open_worker_runtime(kind: str, path: Path, image: int, device: str, threads: int):  # noqa: ANN201
    """The worker's runtime for ``kind`` ("torchscript" | "onnx"), loaded on ``device``."""
    from modelfiles.config import ONNX, TORCHSCRIPT, ModelSpec, TensorSpec
    from worker.runtimes import open_runtime

    spec = ModelSpec(name=f"resnet50-{kind}", platform=TORCHSCRIPT if kind == "torchscript" else ONNX,
                     max_batch_size=64, inputs=(TensorSpec(INPUT, "FP32", (3, image, image)),),
                     outputs=(TensorSpec(OUTPUT, "FP32", (1000,)),))
    return open_runtime(path, spec, device, threads)


# ---- measuring ----------------------------------------------------------------------------

@dataclass
class Cell:
    runtime: str
    batch: int
    samples: list[float] = field(default_factory=list)
    capped: bool = False

    def pct(self, q: float) -> float:
        return float(np.percentile(self.samples, q))


@dataclass
class RuntimeResult:
    runtime: str
    load_s: list[float] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    skipped: str = ""


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(kind: str, path: Path, args: argparse.Namespace, deadline: float) -> RuntimeResult:
    res = RuntimeResult(kind)
    try:
        runtime = None
        for _ in range(args.loads):
            if runtime is not None:
                runtime.close()
                _sync(args.device)
            t0 = time.perf_counter()
            runtime = open_worker_runtime(kind, path, args.image, args.device, args.threads)
            _sync(args.device)
            res.load_s.append(time.perf_counter() - t0)
    except Exception as exc:  # e.g. onnxruntime without a CUDA provider: report, go on
        res.skipped = f"{type(exc).__name__}: {exc}"
        log.warning("%s skipped: %s", kind, res.skipped)
        return res
    assert runtime is not None
    rng = np.random.default_rng(0)
    for k, batch in enumerate(args.batches):
        cell = Cell(kind, batch)
        x = {INPUT: rng.standard_normal((batch, 3, args.image, args.image)).astype(np.float32)}
        for _ in range(args.warmup):
            runtime.run(x, [OUTPUT])
        cell_deadline = time.perf_counter() + max(0.0, deadline - time.perf_counter()) / (len(args.batches) - k)
        for _ in range(args.runs):
            t0 = time.perf_counter()
            runtime.run(x, [OUTPUT])  # returns numpy: the device work is done
            cell.samples.append(time.perf_counter() - t0)
            if time.perf_counter() > cell_deadline and len(cell.samples) >= 20:
                cell.capped = True
                break
        res.cells.append(cell)
        log.info("%s batch %d: p50 %.3f ms p99.9 %.3f ms (n=%d)", kind, batch, cell.pct(50) * 1e3,
                 cell.pct(99.9) * 1e3, len(cell.samples))
    runtime.close()
    return res


# ---- reporting ----------------------------------------------------------------------------

def write_report(results: list[RuntimeResult], args: argparse.Namespace, env: str, wall_s: float) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# GPU predictability: ResNet-50 on {args.device}{' (SMOKE RUN, tiny settings)' if args.smoke else ''}",
             "", f"Command: `python -m bench.gpu_predictability {' '.join(args.argv)}`", "",
             f"Environment: {env}", "",
             f"Input {args.image}x{args.image}, random weights, FP32; up to {args.runs} runs per cell after "
             f"{args.warmup} warm-up runs; timed around the worker's `Runtime.run` (numpy in and out). "
             f"Whole script: {wall_s:.0f} s.", ""]
    for r in results:
        lines += [f"## {r.runtime}", ""]
        if r.skipped:
            lines += [f"Skipped: {r.skipped}", ""]
            continue
        loads = ", ".join(f"{s * 1e3:.0f}" for s in r.load_s)
        lines += [f"Load, file on host to ready on {args.device} (ms, each load): {loads}", "",
                  "| batch | runs | p50 ms | p99 ms | p99.9 ms | max ms | p99.9/p50 | p99/p50 |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c in r.cells:
            p50 = c.pct(50)
            lines.append(f"| {c.batch} | {len(c.samples)}{' (time cap)' if c.capped else ''} | "
                         f"{p50 * 1e3:.3f} | {c.pct(99) * 1e3:.3f} | {c.pct(99.9) * 1e3:.3f} | "
                         f"{max(c.samples) * 1e3:.3f} | {c.pct(99.9) / p50:.3f} | {c.pct(99) / p50:.3f} |")
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    _plot(results, args, out.with_suffix(".png"))
    print("\n".join(lines))


def _plot(results: list[RuntimeResult], args: argparse.Namespace, path: Path) -> None:
    plt = pyplot()

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        if not r.cells:
            continue
        b = [c.batch for c in r.cells]
        for q, style in ((50, "-o"), (99.9, "--x")):
            ax1.plot(b, [c.pct(q) * 1e3 for c in r.cells], style, label=f"{r.runtime} p{q:g}")
        ax2.plot(b, [c.pct(99.9) / c.pct(50) for c in r.cells], "-o", label=r.runtime)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.legend()
        ax.grid(alpha=0.3)
    ax1.set_ylabel("execute ms")
    ax1.set_title(f"ResNet-50 execute time on {args.device}")
    ax2.set_ylabel("p99.9 / p50")
    ax2.set_title("spread")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:1, or cpu")
    p.add_argument("--smoke", action="store_true", help="tiny settings for a CPU check of the path")
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--batches", default="1,2,4,8,16,32")
    p.add_argument("--runs", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--loads", type=int, default=3)
    p.add_argument("--threads", type=int, default=4, help="CPU threads per runtime")
    p.add_argument("--budget-s", type=float, default=360.0, help="seconds of measuring, all runtimes")
    p.add_argument("--out", default=None, help="report path without suffix")
    args = p.parse_args(argv)
    args.argv = argv
    if args.smoke:
        args.image, args.runs, args.warmup, args.loads = 32, 60, 10, 2
        args.batches = "1,2,4"
        args.budget_s = min(args.budget_s, 60.0)
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.out is None:
        args.out = str(RESULTS / ("gpu_predictability_cpu_smoke" if args.device == "cpu"
                                  else "gpu_predictability"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: this torch build ({torch.__version__}) sees no CUDA "
                             "device; use --device cpu for a smoke run")
        torch.zeros(1, device=args.device)  # create the CUDA context outside every timing
        env = f"{torch.cuda.get_device_name(args.device)}, torch {torch.__version__}"
    else:
        env = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    try:
        import onnxruntime as ort

        env += f", onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})"
    except ImportError:
        env += ", no onnxruntime"
    with tempfile.TemporaryDirectory() as tmp:
        paths = export(Path(tmp), args.image)
        deadline = time.perf_counter() + args.budget_s
        results = []
        for i, kind in enumerate(("torchscript", "onnx")):
            # each runtime gets its share of what is left, so one slow runtime cannot starve the other
            share = time.perf_counter() + max(0.0, deadline - time.perf_counter()) / (2 - i)
            results.append(measure(kind, paths[kind], args, share))
    write_report(results, args, env, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
