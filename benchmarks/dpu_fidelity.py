"""DPU fidelity benchmark (issue 5): the simulator's predicted frames/s for ResNet-50,
MobileNetV2 and tiny-YOLOv3 (examples/models, full size) on `zcu102-dpu` (3 x B4096 at
281 MHz, 19.2 GB/s DDR4) beside the published Vitis AI model-zoo figures for the ZCU102,
and per layer the simulator's cycles against the cost model's (compiler/cost.py, same
tile: the `model_cycles` lower-to-dpu records on every dpu.layer).

    .venv/bin/python benchmarks/dpu_fidelity.py               # print the tables
    .venv/bin/python benchmarks/dpu_fidelity.py --write-docs  # and update docs/performance.md ("## DPU")
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))

from benchmarks.common import machine_info, markdown_table  # noqa: E402

HW = "zcu102-dpu"
SINGLE_CORE = "dpu-b4096"  # one B4096 core at 300 MHz on the same DDR: no sharing between cores
SECTION = "## DPU"
# Vitis AI model zoo, ZCU102 (3 x B4096 at 281 MHz), multi-thread throughput (fps).
PUBLISHED = {"resnet50": ("ResNet-50", 224, 164.7), "mobilenet_v2": ("MobileNetV2", 224, 712.0),
             "tiny_yolov3": ("tiny-YOLOv3", 416, 383.6)}
TOLERANCE = 0.10  # per layer, simulator against cost model


@dataclass
class Run:
    """One model lowered and simulated: the SimResult and the program's layers."""

    name: str
    resolution: int
    result: Any
    program: Any


def lower_and_simulate(name: str, resolution: int, hw: str = HW, seed: int = 0) -> Run:
    """The example model at full width, pow2-quantized on seeded random calibration data,
    lowered for `zcu102-dpu`, simulated once on a seeded random input."""
    import numpy as np

    from backends.dpu.artifacts import program_of, weights_blob
    from backends.dpu.runtime import run_program
    from compiler import import_onnx, quantize, run_pipeline
    from examples.models import build

    program = run_pipeline(import_onnx(build(name, resolution=resolution)), "canonicalize,fold-batchnorm,fuse-activation")
    rng = np.random.default_rng(seed)
    shape = (1, 3, resolution, resolution)
    quantized = quantize(program, [{"input": rng.standard_normal(shape).astype(np.float32)}], scheme="pow2")
    run_pipeline(quantized, f'lower-to-dpu{{hw="{hw}"}}')
    dpu, run = program_of(quantized)
    x = rng.integers(-128, 128, shape).astype(np.int8)
    _, result = run_program(dpu, [x], weights_blob(quantized, run))
    return Run(name, resolution, result, dpu)


def layer_ratios(run: Run) -> list[tuple[str, str, int, int, float]]:
    """(layer, kind, simulator cycles, cost-model cycles, ratio) for every layer with both."""
    model = {layer.layer_name.data: layer.attributes for layer in run.program.layer_ops()}
    rows = []
    for stats in run.result.layers:
        attrs = model[stats.name]
        if "model_cycles" in attrs and stats.cycles:
            cycles = int(attrs["model_cycles"].value.data)
            rows.append((stats.name, attrs["kind"].data, stats.cycles, cycles, stats.cycles / cycles))
    return rows


def fps_table(runs: list[Run]) -> str:
    rows = []
    for run in runs:
        label, _, published = PUBLISHED[run.name]
        r = run.result
        ratios = layer_ratios(run)
        model_total = sum(m for _, _, _, m, _ in ratios)
        sim_total = sum(s for _, _, s, _, _ in ratios)
        rows.append([f"{label} ({run.resolution})", f"{len(r.layers)}", f"{len(r.steps):,}",
                     f"{r.latency_s * 1e3:.2f}", f"{r.fps:.1f}", f"{published:g}", f"{r.fps / published:.2f}",
                     f"{r.utilisation:.0%}", f"{sim_total / model_total:.2f}"])
    header = ["model", "DPU layers", "instructions", "latency (ms)", "simulated fps", "published fps",
              "simulated / published", "MAC utilisation", "sum of layers: simulator / cost model"]
    return markdown_table(header, rows)


def layer_table(runs: list[Run]) -> str:
    rows = []
    for run in runs:
        ratios = layer_ratios(run)
        errors = [abs(r - 1) for *_, r in ratios]
        by_kind: dict[str, list[float]] = {}
        for _, kind, _, _, r in ratios:
            by_kind.setdefault(kind, []).append(r)
        kinds = ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in sorted(by_kind.items()))
        rows.append([PUBLISHED[run.name][0], f"{len(ratios)}", f"{statistics.median(errors):.1%}",
                     f"{sum(e <= TOLERANCE for e in errors) / len(errors):.0%}",
                     f"{sum(e <= 0.25 for e in errors) / len(errors):.0%}", kinds])
    header = ["model", "layers", "median \\|sim / model - 1\\|", "within 10%", "within 25%",
              "median sim / model by kind"]
    return markdown_table(header, rows)


def worst_layers(runs: list[Run], count: int = 4) -> str:
    rows = []
    for run in runs:
        ratios = sorted(layer_ratios(run), key=lambda t: -abs(t[4] - 1))[:count]
        for name, kind, sim, model, r in ratios:
            rows.append([PUBLISHED[run.name][0], name, kind, f"{sim:,}", f"{model:,}", f"{r:.2f}"])
    return markdown_table(["model", "layer", "kind", "simulator cycles", "cost model cycles", "ratio"], rows)


def section(runs: list[Run], single: list[Run], speed: str) -> str:
    info = machine_info()
    return "\n".join([
        SECTION,
        "",
        "Written by `benchmarks/dpu_fidelity.py` and `benchmarks/dpu_speed.py` on "
        + ", ".join(f"{k}: {v}" for k, v in info.items()) + ".",
        "",
        "### Predicted throughput against the Vitis AI model zoo (ZCU102, 3 x B4096 at 281 MHz)",
        "",
        "The example models (examples/models, published architectures, seeded random weights) quantized",
        "`pow2`, lowered by `lower-to-dpu{hw=zcu102-dpu}` (every layer on the DPU; the input's quantize",
        "and the outputs' dequantize on the host) and timed by the simulator's cycle model: three cores,",
        "each on its own frame, sharing the 19.2 GB/s DDR; fps = 3 / latency. Published: the Vitis AI",
        "model zoo's multi-threaded ZCU102 figures (ResNet-50 164.7, MobileNetV2 712, tiny-YOLOv3 383.6",
        "fps); goal: within +-25%.",
        "",
        fps_table(runs),
        "",
        "### Simulator against the cost model, per layer",
        "",
        "The cost model (compiler/cost.py: max of compute and DDR time per layer, the DDR shared by the",
        "three cores) with the tile lower-to-dpu chose, against the simulator's cycles of that layer (from",
        "the end of the layers before to the end of its own last instruction, core 0). Goal: within 10%.",
        "",
        layer_table(runs),
        "",
        f"The same on one B4096 core (`{SINGLE_CORE}`: 300 MHz, the DDR to itself), where the cost model's",
        "even split of the bandwidth and the simulator's first-come-first-served DDR cannot differ:",
        "",
        layer_table(single),
        "",
        "The layers furthest from the model (zcu102-dpu):",
        "",
        worst_layers(runs),
        "",
        "Where they differ:",
        "",
        "- **DDR sharing.** The cost model gives each core a third of the bandwidth all the time; the",
        "  simulator's cores take the one DDR first come first served, so a core's small transfer can",
        "  wait behind another core's burst (ResNet-50's global pool: its last 80-byte SAVE waits about",
        "  7,700 cycles behind the other cores' loads of the dense layer's 2 MB of weights). On one core",
        "  (second table) ResNet-50's layers are at a median 7.5%.",
        "- **What the queues cannot hide.** The cost model overlaps all of a layer's DDR transfers with",
        "  its compute. In the simulator a layer's first CONV waits for its first input tile (which waits",
        "  for the previous layer's last SAVE) and its weights, its end waits for its last SAVE, and every",
        "  LOAD and SAVE pays the DDR latency (100 cycles) and every compute instruction the pipeline fill",
        "  (16). On the small layers of the last stages (7x7 and 14x14 maps, one or two tiles, a few",
        "  thousand cycles) that is most of the time: MobileNetV2's, on one core too.",
        "- **Placement.** A concatenation whose operands are SAVEd in place costs nothing on the DPU;",
        "  the cost model counts all its bytes (tiny-YOLOv3's concat20).",
        "",
        "Per layer the two disagree by 7-13% (median); over a whole network the sums agree within 9%.",
        "",
        speed,
        "",
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="replace the '## DPU' section of docs/performance.md")
    args = parser.parse_args()
    runs = [lower_and_simulate(name, resolution) for name, (_, resolution, _) in PUBLISHED.items()]
    single = [lower_and_simulate(name, resolution, SINGLE_CORE) for name, (_, resolution, _) in PUBLISHED.items()]
    print(fps_table(runs), end="\n\n")
    print(layer_table(runs), end="\n\n")
    print(layer_table(single), end="\n\n")
    print(worst_layers(runs), end="\n\n")
    if args.write_docs:
        from benchmarks.dpu_speed import speed_section
        from benchmarks.mapping import write_docs

        write_docs(section(runs, single, speed_section()), SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
