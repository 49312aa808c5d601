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
import textwrap
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


def lower_and_simulate(name: str, resolution: int, hw: str = HW, seed: int = 0, width: float = 1.0) -> Run:
    """The example model (full width by default), pow2-quantized on seeded random
    calibration data, lowered for `hw`, simulated once on a seeded random input."""
    from examples.models import build

    return simulate_model(name, build(name, width=width, resolution=resolution), resolution, hw, seed)


def simulate_model(name: str, model: Any, resolution: int, hw: str = HW, seed: int = 0) -> Run:
    """`lower_and_simulate` of an ONNX model with one 3 x `resolution`^2 input."""
    import numpy as np

    from backends.dpu.artifacts import program_of, weights_blob
    from backends.dpu.runtime import run_program
    from compiler import import_onnx, quantize, run_pipeline

    program = run_pipeline(import_onnx(model), "canonicalize,fold-batchnorm,fuse-activation")
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
        cycles = int(attrs["model_cycles"].value.data) if "model_cycles" in attrs else 0
        if cycles and stats.cycles:
            rows.append((stats.name, attrs["kind"].data, stats.cycles, cycles, stats.cycles / cycles))
    return rows


def sums_ratio(run: Run) -> float:
    """The simulator's cycles over the cost model's, summed over the layers with both."""
    ratios = layer_ratios(run)
    return sum(sim for _, _, sim, _, _ in ratios) / sum(m for _, _, _, m, _ in ratios)


def errors(run: Run) -> list[float]:
    return [abs(r - 1) for *_, r in layer_ratios(run)]


def worst(run: Run) -> tuple[str, float]:
    """The layer furthest from the model and its |sim / model - 1|."""
    name, *_, r = max(layer_ratios(run), key=lambda t: abs(t[4] - 1))
    return name, abs(r - 1)


def goal_met(run: Run) -> bool:
    """Issue 5's goal read strictly: every layer within 10%."""
    return all(e <= TOLERANCE for e in errors(run))


def core_cycles(run: Run) -> dict[str, Any]:
    """Per layer, its cycles on each core (each counted as LayerStats counts core 0's:
    from the end of the layers before to the end of its own last instruction)."""
    import numpy as np

    r = run.result
    names = [s.name for s in r.layers]
    members: dict[str, list[int]] = {n: [] for n in names}
    for step in r.steps:
        if step.queue is not None:
            members[r.layer_names[step.index]].append(step.index)
    ends = np.stack([r.end[:, members[n]].max(axis=1) for n in names], axis=1)  # cores x layers
    cycles = np.diff(np.maximum.accumulate(ends, axis=1), axis=1, prepend=0)
    return {n: cycles[:, k] for k, n in enumerate(names)}


def cores_alike(run: Run) -> bool:
    """Whether every core took the same cycles for every layer (the DDR shared round robin)."""
    return all(int(c.max()) == int(c.min()) for c in core_cycles(run).values())


# Single layers (docs/isa.md section 12, "Measured"), each after a 1x1 convolution that
# makes its input map: (description, map side, input channels, the layer).
SINGLE_LAYERS: list[tuple[str, int, int, Any]] = [
    ("3x3 conv + relu, 56x56x64 -> 64 (ResNet-50 res2)", 56, 64,
     lambda g, x: g.activation("relu", "layer_relu", g.conv("layer", x, 64, 3))),
    ("1x1 conv, 56x56x64 -> 256 (res2)", 56, 64, lambda g, x: g.conv("layer", x, 256, 1)),
    ("3x3 conv + relu, 7x7x512 -> 512 (res5)", 7, 512,
     lambda g, x: g.activation("relu", "layer_relu", g.conv("layer", x, 512, 3))),
    ("depthwise 3x3, 112x112x32", 112, 32, lambda g, x: g.conv("layer", x, 32, 3, group=32)),
    ("max pool 3x3 stride 2, 112x112x64", 112, 64,
     lambda g, x: g.node("MaxPool", [x], "layer", 64, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("add, 56x56x256", 56, 256, lambda g, x: g.add("layer", x, g.conv("other", x, 256, 1))),
]


def single_layers_table() -> str:
    """Each of `SINGLE_LAYERS` lowered on its own (after the convolution making its input)
    for zcu102-dpu and for one B4096 core: the simulator's cycles against the model's."""
    from examples.models.builders import Graph

    rows = []
    for label, side, channels, make in SINGLE_LAYERS:
        cells = [label]
        for hw in (HW, SINGLE_CORE):
            g = Graph(seed=0)
            x = g.activation("relu", "before", g.conv("before_conv", g.input("input", 3), channels, 1))
            run = simulate_model("layer", g.model("layer", side, [make(g, x)]), side, hw)
            ratio = next(r for r in layer_ratios(run) if r[0] == "layer")  # (a fused relu keeps the conv's name)
            cells += [f"{ratio[2]:,}", f"{ratio[3]:,}", f"{ratio[4]:.2f}"]
        rows.append(cells)
    header = ["layer", f"{HW}: simulator", "cost model", "ratio", f"{SINGLE_CORE}: simulator", "cost model", "ratio"]
    return markdown_table(header, rows)


def fps_table(runs: list[Run]) -> str:
    rows = []
    for run in runs:
        label, _, published = PUBLISHED[run.name]
        r = run.result
        rows.append([f"{label} ({run.resolution})", f"{len(r.layers)}", f"{len(r.steps):,}",
                     f"{r.latency_s * 1e3:.2f}", f"{r.fps:.1f}", f"{published:g}", f"{r.fps / published:.2f}",
                     f"{r.utilisation:.0%}", f"{sums_ratio(run):.2f}"])
    header = ["model", "DPU layers", "instructions", "latency (ms)", "simulated fps", "published fps",
              "simulated / published", "MAC utilisation", "sum of layers: simulator / cost model"]
    return markdown_table(header, rows)


def layer_table(runs: list[Run]) -> str:
    rows = []
    for run in runs:
        ratios = layer_ratios(run)
        errs = errors(run)
        by_kind: dict[str, list[float]] = {}
        for _, kind, _, _, r in ratios:
            by_kind.setdefault(kind, []).append(r)
        kinds = ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in sorted(by_kind.items()))
        name, error = worst(run)
        rows.append([PUBLISHED[run.name][0], f"{len(ratios)}",
                     f"{sum(e <= TOLERANCE for e in errs)} ({sum(e <= TOLERANCE for e in errs) / len(errs):.0%})",
                     f"{error:.1%} ({name})", "met" if goal_met(run) else "missed",
                     f"{statistics.median(errs):.2%}", f"{sum(e <= 0.25 for e in errs) / len(errs):.0%}", kinds])
    header = ["model", "layers", "within 10%", "largest \\|sim / model - 1\\|", "goal (every layer within 10%)",
              "median \\|sim / model - 1\\|", "within 25%", "median sim / model by kind"]
    return markdown_table(header, rows)


def worst_layers(runs: list[Run], count: int = 4) -> str:
    rows = []
    for run in runs:
        ratios = sorted(layer_ratios(run), key=lambda t: -abs(t[4] - 1))[:count]
        for name, kind, sim, model, r in ratios:
            rows.append([PUBLISHED[run.name][0], name, kind, f"{sim:,}", f"{model:,}", f"{r:.2f}"])
    return markdown_table(["model", "layer", "kind", "simulator cycles", "cost model cycles", "ratio"], rows)


def verdict(runs: list[Run]) -> str:
    """'met for ...; missed for ...', met only when every layer of a model is within 10%."""
    parts = []
    for word, group in (("met", [r for r in runs if goal_met(r)]), ("missed", [r for r in runs if not goal_met(r)])):
        if group:
            parts.append(f"{word} for " + ", ".join(
                f"{PUBLISHED[r.name][0]} ({sum(e <= TOLERANCE for e in errors(r))} of {len(errors(r))} layers, "
                f"largest {worst(r)[1]:.1%})" for r in group))
    return "; ".join(parts)


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
        "each on its own frame, sharing the 19.2 GB/s DDR round robin (each core a third while all",
        "transfer; running one program from cycle 0, they stay in lockstep); fps = 3 / latency. Published: the Vitis AI",
        "model zoo's multi-threaded ZCU102 figures (ResNet-50 164.7, MobileNetV2 712, tiny-YOLOv3 383.6",
        "fps); goal: within +-25%.",
        "",
        fps_table(runs),
        "",
        "### Simulator against the cost model, per layer",
        "",
        "The cost model of a DPU layer (compiler/engines/dpu.py through compiler/cost.py, docs/isa.md",
        "section 13, \"Cost model\") for the tile lower-to-dpu chose, against the simulator's cycles of",
        "that layer (from the end of the layers before to the end of its own last instruction, core 0).",
        "The model times the layer's instruction stream with the simulator's own parameters: its DDR",
        "bytes (weights in bank layout) at the core's share of the bandwidth, compute with a pipeline",
        "fill per instruction, and what the queues cannot overlap -- the loads before the first",
        "compute instruction, the last SAVE (and the one before it, still moving), the stall while the",
        "next output-channel tile's weights load, a tile's pace with two banks per operand, the DDR",
        "latencies no transfer hides. At each boundary it replays the next layer's first LOADs",
        "against the layer's last SAVEs as the simulator orders them (`boundary`): the load queue issues",
        "the next weights and bias records (and an input whose SAVEs are done) as soon as their bank",
        "words are free, so they move during the layer's tail, delay its last SAVE and are done when the",
        "next layer starts; the layer they delay is charged for them, as the simulator counts. Goal",
        "(issue 5, read strictly): every layer within 10%.",
        "",
        layer_table(runs),
        "",
        textwrap.fill(f"Goal {verdict(runs)}. Over a whole network the layers' sums agree within "
                      f"{max(abs(sums_ratio(run) - 1) for run in runs):.0%} (the first table's last column); the "
                      f"three cores' cycles are {'the same' if all(cores_alike(run) for run in runs) else 'NOT the same'} "
                      "for every layer. Before: a layer's max of compute and DDR time had medians of 13.0% (ResNet-50), "
                      "13.3% (MobileNetV2) and 7.4% (tiny-YOLOv3); the model without the layers beside it put 79%, "
                      "67% and 75% of the layers within 10% on one core; while the simulator's cores took the DDR "
                      "in whole transfers first come first served (core 0 ahead, the cores drifting into different "
                      "layers), 81%, 50% and 65% on three.",
                      98, break_on_hyphens=False),
        "",
        f"The same on one B4096 core (`{SINGLE_CORE}`: 300 MHz, the DDR to itself, no other core's",
        "transfers between its own):",
        "",
        layer_table(single),
        "",
        textwrap.fill(f"Goal on one core {verdict(single)}.", 98, break_on_hyphens=False),
        "",
        "The layers furthest from the model (zcu102-dpu):",
        "",
        worst_layers(runs),
        "",
        "Where they still differ: the layers above, all but a concatenation within 5%; the model is an",
        "analytical sum per layer, the simulator schedules every instruction, so a tile's transfers",
        "that the model counts as hidden behind compute can land a little differently.",
        "",
        speed,
        "",
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="replace the '## DPU' section of docs/performance.md")
    parser.add_argument("--single-layers", action="store_true", help="print only docs/isa.md's single-layer table")
    args = parser.parse_args()
    if args.single_layers:
        print(single_layers_table())
        return 0
    runs = [lower_and_simulate(name, resolution) for name, (_, resolution, _) in PUBLISHED.items()]
    single = [lower_and_simulate(name, resolution, SINGLE_CORE) for name, (_, resolution, _) in PUBLISHED.items()]
    print(fps_table(runs), end="\n\n")
    print(layer_table(runs), end="\n\n")
    print(layer_table(single), end="\n\n")
    print(worst_layers(runs), end="\n\n")
    print(f"Goal {verdict(runs)}; on one core {verdict(single)}; cores alike: {all(cores_alike(run) for run in runs)}.")
    if args.write_docs:
        from benchmarks.common import replace_doc_section
        from benchmarks.dpu_speed import speed_section

        replace_doc_section(section(runs, single, speed_section()), SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
