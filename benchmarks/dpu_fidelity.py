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
import tempfile
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


def third_of_the_ddr(directory: Path) -> Path:
    """A target file: one core of `zcu102-dpu` with a third of its DDR to itself -- what each
    core would have if the three cores' shares were fixed instead of first come first served."""
    import re

    from compiler.hw import load_target

    text = (ROOT / "compiler" / "hw" / "targets" / f"{HW}.hw").read_text()
    bandwidth = load_target(HW).dram.bandwidth
    for pattern, replacement in ((rf"target {HW} {{", "target zcu102-dpu-core {"), (r"count 3;", "count 1;"),
                                 (r"bandwidth [0-9.]+ GB/s;", f"bandwidth {bandwidth / 3e9:.6f} GB/s;"),
                                 (r"size 24 x 32 KB;", "size 8 x 32 KB;")):
        text, found = re.subn(pattern, replacement, text)
        assert found == 1, f"{HW}.hw has no '{pattern}'"
    path = directory / "zcu102-dpu-core.hw"
    path.write_text(text)
    return path


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
    import numpy as np

    from backends.dpu.artifacts import program_of, weights_blob
    from backends.dpu.runtime import run_program
    from compiler import import_onnx, quantize, run_pipeline
    from examples.models import build

    program = run_pipeline(import_onnx(build(name, width=width, resolution=resolution)),
                           "canonicalize,fold-batchnorm,fuse-activation")
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


def median_error(run: Run) -> float:
    return statistics.median(errors(run))


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


def core_spread(run: Run) -> float:
    """Median over the layers of the largest over the smallest of a layer's cycles on the cores."""
    spreads = [c.max() / c.min() for c in core_cycles(run).values() if c.min() > 0]
    return float(statistics.median(spreads))


def cores_table(runs: list[Run]) -> str:
    """Three cores: how far the cores' own cycles of a layer are apart, and the model against
    core 0 (the goal's measure), the cores' mean and the nearest core."""
    rows = []
    for run in runs:
        cores = core_cycles(run)
        ratios = layer_ratios(run)
        apart = sum(cores[name].max() / cores[name].min() > (1 + TOLERANCE) / (1 - TOLERANCE)
                    for name, *_ in ratios)
        mean = sum(abs(cores[name].mean() / model - 1) <= TOLERANCE for name, _, _, model, _ in ratios)
        nearest = sum(min(abs(c / model - 1) for c in cores[name]) <= TOLERANCE for name, _, _, model, _ in ratios)
        n = len(ratios)
        rows.append([PUBLISHED[run.name][0], f"{n}", f"{core_spread(run):.2f}", f"{apart} ({apart / n:.0%})",
                     f"{sum(e <= TOLERANCE for e in errors(run)) / n:.0%}", f"{mean / n:.0%}", f"{nearest / n:.0%}"])
    header = ["model", "layers", "median slowest / fastest core", "layers whose cores are over 10% from any one number",
              "model within 10%: core 0", "the cores' mean", "the nearest core"]
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


def bullet(text: str) -> str:
    """A markdown list item, wrapped as the docs are."""
    return textwrap.fill(text, 98, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False)


def verdict(runs: list[Run]) -> str:
    """'met for ...; missed for ...', met only when every layer of a model is within 10%."""
    parts = []
    for word, group in (("met", [r for r in runs if goal_met(r)]), ("missed", [r for r in runs if not goal_met(r)])):
        if group:
            parts.append(f"{word} for " + ", ".join(
                f"{PUBLISHED[r.name][0]} ({sum(e <= TOLERANCE for e in errors(r))} of {len(errors(r))} layers, "
                f"largest {worst(r)[1]:.1%})" for r in group))
    return "; ".join(parts)


def section(runs: list[Run], single: list[Run], third: list[Run], speed: str) -> str:
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
        "The cost model of a DPU layer (compiler/engines/dpu.py through compiler/cost.py, docs/isa.md",
        "section 13, \"Cost model\") for the tile lower-to-dpu chose, against the simulator's cycles of",
        "that layer (from the end of the layers before to the end of its own last instruction, core 0).",
        "The model times the layer's instruction stream with the simulator's own parameters: its DDR",
        "bytes (weights in bank layout) at the core's share of the bandwidth, compute with a pipeline",
        "fill per instruction, and what the queues cannot overlap -- the loads before the first",
        "compute instruction, the last SAVE (and the one before it, still moving), the stall while the",
        "next output-channel tile's weights load, a tile's pace with two banks per operand, on one core",
        "the DDR latencies no transfer hides. At each boundary it replays the next layer's first LOADs",
        "against the layer's last SAVEs as the simulator orders them (`boundary`): the load queue issues",
        "the next weights and bias records (and an input whose SAVEs are done) as soon as their bank",
        "words are free, so they move during the layer's tail, delay its last SAVE and are done when the",
        "next layer starts; the layer they delay is charged for them, as the simulator counts. Goal",
        "(issue 5, read strictly): every layer within 10%.",
        "",
        layer_table(runs),
        "",
        textwrap.fill(f"Goal {verdict(runs)}. Over a whole network the layers' sums agree within "
                      f"{max(abs(sums_ratio(run) - 1) for run in runs):.0%} (the first table's last column). Before: "
                      "a layer's max of compute and DDR time had medians of 13.0% (ResNet-50), 13.3% (MobileNetV2) "
                      "and 7.4% (tiny-YOLOv3), 7.5%, 26.6% and 1.7% on one core; the model without the layers "
                      "beside it put 81%, 50% and 65% of the layers within 10%, 79%, 67% and 75% on one core.",
                      98, break_on_hyphens=False),
        "",
        f"The same on one B4096 core (`{SINGLE_CORE}`: 300 MHz, the DDR to itself, no other core's",
        "transfers between its own):",
        "",
        layer_table(single),
        "",
        textwrap.fill(f"Goal on one core {verdict(single)}.", 98, break_on_hyphens=False),
        "",
        "On three cores, per layer, the cores against each other and the model (a core's cycles of a",
        "layer counted as core 0's):",
        "",
        cores_table(runs),
        "",
        "The same three cores if each had a fixed third of the DDR (one B4096 core at 281 MHz on",
        "6.4 GB/s: the cores then run alike, each as this one):",
        "",
        layer_table(third),
        "",
        textwrap.fill(f"Goal with a third of the DDR each {verdict(third)}.", 98, break_on_hyphens=False),
        "",
        "The layers furthest from the model (zcu102-dpu):",
        "",
        worst_layers(runs),
        "",
        "Where they still differ (three cores only):",
        "",
        bullet("**The cores do not agree with each other.** The simulator's one DDR channel moves whole "
               "transfers, first come first served, ties going to the lower core: core 0 runs ahead, a "
               "layer's weights (up to 256 KiB, 4,000 cycles) hold the channel while the other cores wait, "
               "and the cores drift into different layers, so a core gets more than a third of the bandwidth "
               "while the others compute and less behind their bursts. The model gives each core a third, "
               "and at a boundary takes the cores as in near lockstep (on average (cores - 1) / 2 of them "
               "move the same LOAD just before this core's, the rest just after): a layer's cycles on an "
               "average core. No one number per layer is within 10% of every core for the layers the "
               "three-core table counts, and core 0, first at every burst, is charged less than an average core in the "
               "layer before a burst of weights and more in the layer after. With a fixed third of the DDR "
               "each (the table after it) the cores run alike and the model's largest deviation is "
               + ", ".join(f"{worst(run)[1]:.1%} ({PUBLISHED[run.name][0]})" for run in third)
               + ": what is left on three cores is how the one channel is shared."),
        bullet("**Short layers.** Most of MobileNetV2's layers take a few thousand cycles, a few of its "
               "tiles' transfers, so where the other cores are decides a layer's time; on one core (no "
               "other transfers) the same model puts every layer within "
               f"{max(worst(run)[1] for run in single):.1%}."),
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
    with tempfile.TemporaryDirectory() as directory:
        core = str(third_of_the_ddr(Path(directory)))
        third = [lower_and_simulate(name, resolution, core) for name, (_, resolution, _) in PUBLISHED.items()]
    print(fps_table(runs), end="\n\n")
    print(layer_table(runs), end="\n\n")
    print(layer_table(single), end="\n\n")
    print(cores_table(runs), end="\n\n")
    print(layer_table(third), end="\n\n")
    print(worst_layers(runs), end="\n\n")
    print(f"Goal {verdict(runs)}; on one core {verdict(single)}; with a third of the DDR each {verdict(third)}.")
    if args.write_docs:
        from benchmarks.common import replace_doc_section
        from benchmarks.dpu_speed import speed_section

        replace_doc_section(section(runs, single, third, speed_section()), SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
