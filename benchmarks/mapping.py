"""Hardware-model benchmark (issue 4): hybrid against SEML and SESL throughput on
MobileNetV1 and MobileNetV2 (examples/models, 224x224) at 512, 1024 and 2048 PEs on the
`zcu102` target, in float32 as built and as int8 (the same layers with 1-byte activations
and weights, what an FPGA accelerator runs); and how long mapping ResNet-50 (the onnx
wheel's light model) takes.

    .venv/bin/python benchmarks/mapping.py               # print the tables
    .venv/bin/python benchmarks/mapping.py --write-docs  # and update docs/performance.md
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))

from benchmarks.common import LIGHT, machine_info, markdown_table, section_main  # noqa: E402

BUDGETS = (512, 1024, 2048)
MODELS = ("mobilenet_v1", "mobilenet_v2")
SECTION = "## Hardware model"
PIPELINE = "canonicalize,fold-batchnorm,fuse-activation"


def graph_of(model: object) -> object:
    from compiler import import_onnx, run_pipeline
    from compiler.mapping import LayerGraph

    program = run_pipeline(import_onnx(model), PIPELINE)  # type: ignore[arg-type]
    return LayerGraph.of_module(program.module)[0]


def as_int8(graph: object) -> object:
    from compiler.mapping import LayerGraph

    assert isinstance(graph, LayerGraph)
    layers = tuple(dataclasses.replace(w, elem_bytes=1, weight_elem_bytes=1) for w in graph.layers)
    return LayerGraph(layers, graph.producers, graph.outputs)


# FiBHA's published ratios (hybrid throughput over the best SEML / SESL accelerators at
# the same budget, "up to"): the SBAC-PAD 2022 paper and its TACO 2024 journal version.
FIBHA = {"FiBHA (SBAC-PAD 2022)": (1.7, 4.1), "FiBHA (TACO 2024)": (2.5, 4.0)}


def mapping(graph: object, arch: str, budget: int) -> object | None:
    from compiler.errors import LayerloomError
    from compiler.hw import load_target
    from compiler.mapping import assign

    try:
        return assign(graph, load_target("zcu102"), arch, budget)  # type: ignore[arg-type]
    except LayerloomError:
        return None  # does not fit on chip


def hybrid_tables() -> tuple[str, str, list[float]]:
    """The per-budget table (with what limits SESL: its slowest stage or the DRAM, and its
    DRAM megabytes per frame, streamed weights included), the 'up to' summary beside
    FiBHA's published ratios, and every hybrid / SEML ratio."""
    from examples.models.builders import build

    rows: list[list[str]] = []
    best: dict[tuple[str, str], list[float | None]] = {}
    over_semls: list[float] = []
    for name in MODELS:
        float_graph = graph_of(build(name))
        for label, graph in (("float32", float_graph), ("int8", as_int8(float_graph))):
            for budget in BUDGETS:
                seml, sesl, hybrid = (mapping(graph, arch, budget) for arch in ("seml", "sesl", "hybrid"))
                assert hybrid is not None and seml is not None
                seml_fps, hybrid_fps = seml.throughput_fps, hybrid.throughput_fps  # type: ignore[attr-defined]
                over_seml = hybrid_fps / seml_fps
                over_semls.append(over_seml)
                over_sesl, sesl_fps, limit = None, "does not fit", "-"
                if sesl is not None:
                    over_sesl = hybrid_fps / sesl.throughput_fps  # type: ignore[attr-defined]
                    sesl_fps = f"{sesl.throughput_fps:,.0f}"  # type: ignore[attr-defined]
                    limit = f"{sesl.bottleneck}, {sesl.dram_bytes / 1e6:.1f} MB/frame"  # type: ignore[attr-defined]
                rows.append([name, label, f"{budget:,}", f"{seml_fps:,.0f}", sesl_fps, limit, f"{hybrid_fps:,.0f}",
                             f"{over_seml:.2f}x", "-" if over_sesl is None else f"{over_sesl:.2f}x"])  # fmt: skip
                seen = best.setdefault((name, label), [0.0, None])
                seen[0] = max(seen[0] or 0.0, over_seml)
                if over_sesl is not None:
                    seen[1] = max(seen[1] or 0.0, over_sesl)
    header = ["model", "data", "PEs", "SEML fps", "SESL fps", "SESL limited by", "hybrid fps", "hybrid / SEML", "hybrid / SESL"]
    summary = [[f"{name}, {label}", f"{a:.2f}x", "SESL does not fit" if b is None else f"{b:.2f}x"] for (name, label), (a, b) in best.items()]
    summary += [[source, f"{a}x", f"{b}x"] for source, (a, b) in FIBHA.items()]
    summary_table = markdown_table(["up to (512-2,048 PEs)", "hybrid / SEML", "hybrid / SESL"], summary)
    return markdown_table(header, rows), summary_table, over_semls


SCALESIM_SECONDS = 14 * 60  # SCALE-Sim on ResNet-50's 53 convolutions, this kind of machine


def resnet_timing(repeats: int = 5) -> str:
    from compiler.hw import load_target
    from compiler.mapping import assign

    graph = graph_of(str(LIGHT / "light_resnet50.onnx"))
    rows = []
    for hw, arch, budget in (("zcu102", "seml", 2048), ("zcu102", "hybrid", 2048), ("systolic-os32", "seml", None)):
        target = load_target(hw)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            assign(graph, target, arch, budget)  # type: ignore[arg-type]
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        rows.append([f"{hw}, {arch}, {budget or target.pe_budget} PEs", f"{seconds:.3f}", f"{SCALESIM_SECONDS / seconds:,.0f}x"])
    header = ["ResNet-50 (90 layers, 53 convolutions)", "seconds (median of 5)", f"SCALE-Sim's ~{SCALESIM_SECONDS} s / this"]
    return markdown_table(header, rows)


def section() -> str:
    info = machine_info()
    table, summary, over_seml = hybrid_tables()
    return "\n".join([
        SECTION,
        "",
        "Written by `benchmarks/mapping.py` on " + ", ".join(f"{k}: {v}" for k, v in info.items()) + ".",
        "",
        "### Hybrid against SEML and SESL (throughput, frames/s, zcu102 at 300 MHz, 19.2 GB/s DDR4, 4 MB BRAM)",
        "",
        "The examples' MobileNets at 224x224 mapped by `assign-engines` (with tiles and the best memory plan);",
        "`int8` is the same network with 1-byte activations and weights. A pipeline (SESL) layer keeps its",
        "weights on chip where they fit, chosen by DRAM bytes saved per on-chip byte; the others' weights",
        "stream from DRAM once per tile of output rows (from one row up to the whole frame, the rows",
        "buffered on chip), and all engines share the DRAM: a period is at least the frame's DRAM bytes",
        "at 19.2 GB/s. \"SESL limited by\" says whether SESL's slowest stage (`pipeline`) or the DRAM sets",
        "its period; SESL \"does not fit\" when its line buffers alone exceed the on-chip memory.",
        "",
        table,
        "",
        "Beside FiBHA's published figures (the largest ratio over the three budgets):",
        "",
        summary,
        "",
        f"Hybrid over SEML ranges {min(over_seml):.2f}-{max(over_seml):.2f}x (FiBHA: up to 1.7x): the reused engine",
        "idles on the MobileNets' first layers (3 input channels, depthwise convolutions on wide maps), which",
        "the pipeline runs with PEs sized to each. Hybrid over SESL stays far below FiBHA's 4.1x, and the",
        "difference is the SESL baseline.",
        "Ours is an idealised balanced pipeline: every stage gets exactly the PEs it needs (any count, with",
        "FINN-style PE x SIMD folding), on-chip memory is counted in bytes (no BRAM width, bank or port",
        "granularity, which a PE x SIMD-wide weight read multiplies on a real FPGA), engines cost nothing",
        "beyond their MACs and buffers, and DRAM runs at its peak. In int8 the MobileNets' weights",
        "(4.2 / 3.5 MB) nearly fit the 4.1 MB of BRAM, the rest stream once per frame, and the pipeline is",
        "compute-bound with almost every PE busy: at 1,024 and 2,048 PEs hybrid has nothing left to win",
        "(1.00x), and little at 512. In float32 the wide early layers' line buffers take most of the BRAM,",
        "so the big pointwise layers re-read their weights every few output rows: SESL is DRAM-bound at",
        "the same rate whatever the budget, and hybrid, which moves those layers to the reused engine,",
        "pulls ahead as PEs are added; MobileNetV2's float line buffers alone exceed the BRAM. FiBHA",
        "measures implemented SESL designs on real FPGAs, where those overheads make a deep pipeline much",
        "less efficient than this bound.",
        "",
        "### Time to estimate ResNet-50",
        "",
        "The mapping search (cost of every layer on every engine for every PE count, tiles, memory plans,",
        "all splits for hybrid). SCALE-Sim takes about 14 minutes for the 53 convolutions of ResNet-50 on",
        "this kind of machine (cycle-level simulation of one 32x32 array); `systolic-os32` is that array,",
        "whose compute cycles the cost model gives by SCALE-Sim's formula (tests/test_cost_model.py).",
        "",
        resnet_timing(),
        "",
    ])  # fmt: skip


def main() -> int:
    return section_main(__doc__.splitlines()[0], section, SECTION)


if __name__ == "__main__":
    sys.exit(main())
