"""Hardware-model benchmark (issue 4): hybrid against SEML and SESL throughput on
MobileNetV1 and MobileNetV2 (examples/models, 224x224) at 512, 1024 and 2048 PEs on the
`zcu102` target, in float32 as built and as int8 (the same layers with 1-byte activations
and weights, what an FPGA accelerator runs); and how long mapping ResNet-50 (the onnx
wheel's light model) takes.

    .venv/bin/python benchmarks/mapping.py               # print the tables
    .venv/bin/python benchmarks/mapping.py --write-docs  # and update docs/performance.md
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))

from benchmarks.common import LIGHT, machine_info, markdown_table  # noqa: E402

BUDGETS = (512, 1024, 2048)
MODELS = ("mobilenet_v1", "mobilenet_v2")
DOCS = ROOT / "docs" / "performance.md"
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


def fps(graph: object, arch: str, budget: int) -> float | None:
    from compiler.errors import LayerloomError
    from compiler.hw import load_target
    from compiler.mapping import assign

    try:
        return assign(graph, load_target("zcu102"), arch, budget).throughput_fps  # type: ignore[arg-type]
    except LayerloomError:
        return None  # does not fit on chip


def hybrid_table() -> str:
    from examples.models.builders import build

    rows = []
    for name in MODELS:
        float_graph = graph_of(build(name))
        for label, graph in (("float32", float_graph), ("int8", as_int8(float_graph))):
            for budget in BUDGETS:
                seml, sesl, hybrid = (fps(graph, arch, budget) for arch in ("seml", "sesl", "hybrid"))
                assert hybrid is not None and seml is not None
                rows.append([name, label, f"{budget:,}", f"{seml:,.0f}", "does not fit" if sesl is None else f"{sesl:,.0f}",
                             f"{hybrid:,.0f}", f"{hybrid / seml:.2f}x", "-" if sesl is None else f"{hybrid / sesl:.2f}x"])  # fmt: skip
    header = ["model", "data", "PEs", "SEML fps", "SESL fps", "hybrid fps", "hybrid / SEML", "hybrid / SESL"]
    return markdown_table(header, rows)


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
    return "\n".join([
        SECTION,
        "",
        "Written by `benchmarks/mapping.py` on " + ", ".join(f"{k}: {v}" for k, v in info.items()) + ".",
        "",
        "### Hybrid against SEML and SESL (throughput, frames/s, zcu102 at 300 MHz, 19.2 GB/s DDR4, 4 MB BRAM)",
        "",
        "The examples' MobileNets at 224x224 mapped by `assign-engines` (with tiles and the best memory plan);",
        "`int8` is the same network with 1-byte activations and weights. FiBHA reports hybrid up to 1.7x",
        "faster than SEML and 4.1x than SESL. SESL \"does not fit\" when the pipeline's weights and line",
        "buffers exceed the on-chip memory.",
        "",
        hybrid_table(),
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


def write_docs(text: str, heading: str = SECTION) -> None:
    """Replace the section under `heading` in docs/performance.md with `text` (append it
    when there is none)."""
    doc = DOCS.read_text()
    start = doc.find(heading + "\n")
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        end = doc.find("\n## ", start + len(heading))
        doc = doc[:start] + text.rstrip("\n") + "\n" + ("\n" + doc[end + 1 :] if end >= 0 else "")
    DOCS.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="replace the section in docs/performance.md")
    args = parser.parse_args()
    text = section()
    print(text)
    if args.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
