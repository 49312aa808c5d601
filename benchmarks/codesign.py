"""Co-design benchmark (issue 4, item 9): `prune{target=latency ...}` with the mapping in
the loop, on `zcu102` (hybrid) at a PE budget.

- The digits CNN (examples/digits_cnn.onnx, batches of 400 images): the latency goal met
  with the sensitivity measured on the first 1200 training images, and without data; the
  accuracy before and after on the 400-image test split.
- MobileNetV1-0.25 at 224x224 (examples/models, random weights): latency only (no data:
  the sensitivity is the filter-norm mass removed), against the uniform ratio that meets
  the same goal without hardware feedback.

    .venv/bin/python benchmarks/codesign.py               # print the tables
    .venv/bin/python benchmarks/codesign.py --write-docs  # and update docs/performance.md
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))
if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))

from benchmarks.common import (  # noqa: E402
    machine_info,
    markdown_table,
    section_main,  # noqa: E402
)
from compiler.hw import load_target  # noqa: E402
from compiler.program import Program  # noqa: E402
from compiler.prune.codesign import mapped  # noqa: E402
from compiler.prune.report import PruneReport  # noqa: E402
from passes.prune import prune  # noqa: E402

HW, ARCH, GOAL = "zcu102", "hybrid", 0.7
DIGITS_BUDGETS = (512, 1024)
MOBILENET_BUDGET = 1024
SECTION = "## Co-design"
BATCH = 400


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def period(program: Program, budget: int) -> float:
    """Seconds per frame as `layerloom estimate` maps the program."""
    return mapped(program, load_target(HW), ARCH, budget).period_s


def channels(report: PruneReport) -> str:
    """The groups that changed, `layer before->after`."""
    changed = [g for g in report.groups if g.channels_after != g.channels_before]
    return ", ".join(f"{g.layers[0]} {g.channels_before}->{g.channels_after}" for g in changed) or "none"


def digits_rows() -> list[list[str]]:
    import train_digits

    from backends.reference import execute
    from compiler import import_onnx

    program = import_onnx(ROOT / "examples" / "digits_cnn.onnx", input_shapes={"input": (BATCH, 1, 8, 8)})
    x_train, y_train, x_test, y_test = train_digits.digits_split()
    data, labels = x_train[: 3 * BATCH], y_train[: 3 * BATCH]

    def accuracy(p: Program) -> str:
        return f"{np.mean(execute(p, {'input': x_test})['logits'].argmax(axis=1) == y_test):.2%}"

    rows = []
    base = accuracy(program)
    for budget in DIGITS_BUDGETS:
        for label, given, compensate in (("data", (data, labels), False), ("data, compensate=true", (data, labels), True),
                                         ("no data", (None, None), False)):  # fmt: skip
            start = time.perf_counter()
            pruned, report = prune(program, *given, target="latency", goal=GOAL, hw=HW, arch=ARCH, budget=budget,
                                   compensate=compensate)  # fmt: skip
            seconds = time.perf_counter() - start
            d = report.codesign
            assert d is not None and d.period_after <= GOAL * d.period_before
            assert d.period_after == period(pruned, budget)
            rows.append([f"{budget:,}", label, channels(report), f"{report.macs_after / report.macs_before:.2f}",
                         us(d.period_before), us(d.period_after), f"{d.period_after / d.period_before:.3f}",
                         base, accuracy(pruned), f"{seconds:.1f}"])  # fmt: skip
    return rows


def uniform_meeting(program: Program, before: float) -> tuple[float, float, PruneReport]:
    """The smallest uniform ratio (steps of 0.01, multiple 8) whose program meets the
    period goal: pruning without hardware feedback, for comparison."""
    for ratio in np.arange(0.01, 0.9, 0.01):
        pruned, report = prune(program, ratio=float(ratio), multiple=8)
        after = period(pruned, MOBILENET_BUDGET)
        if after <= GOAL * before:
            return float(ratio), after, report
    raise AssertionError("no uniform ratio meets the goal")


def mobilenet_rows() -> tuple[list[list[str]], str]:
    import onnx

    from compiler import import_onnx
    from examples.models.builders import build

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mobilenet_v1.onnx"
        onnx.save(build("mobilenet_v1", width=0.25, resolution=224), path)
        program = import_onnx(path)
    start = time.perf_counter()
    _, report = prune(program, target="latency", goal=GOAL, hw=HW, arch=ARCH, budget=MOBILENET_BUDGET)
    seconds = time.perf_counter() - start
    d = report.codesign
    assert d is not None and d.period_after <= GOAL * d.period_before
    uniform = uniform_meeting(program, d.period_before)
    rows = [
        ["period (1/throughput), us", us(d.period_before), us(d.period_after), f"{d.period_after / d.period_before:.3f}"],
        ["throughput, frames/s", f"{d.throughput_before:,.0f}", f"{d.throughput_after:,.0f}",
         f"{d.throughput_after / d.throughput_before:.3f}"],
        ["latency of one frame, us", us(d.latency_before), us(d.latency_after), f"{d.latency_after / d.latency_before:.3f}"],
        ["MACs", f"{report.macs_before:,}", f"{report.macs_after:,}", f"{report.macs_after / report.macs_before:.3f}"],
        ["parameters", f"{report.params_before:,}", f"{report.params_after:,}",
         f"{report.params_after / report.params_before:.3f}"],
        ["bottleneck", d.bottleneck_before, d.bottleneck_after, ""],
    ]  # fmt: skip
    ratio, u_period, u_report = uniform
    rows.append([f"uniform ratio {ratio:.2f} (multiple 8) for the same goal: period, us", us(d.period_before),
                 us(u_period), f"{u_period / d.period_before:.3f}"])  # fmt: skip
    rows.append(["  its MACs", f"{u_report.macs_before:,}", f"{u_report.macs_after:,}",
                 f"{u_report.macs_after / u_report.macs_before:.3f}"])  # fmt: skip
    rows.append(["  its parameters", f"{u_report.params_before:,}", f"{u_report.params_after:,}",
                 f"{u_report.params_after / u_report.params_before:.3f}"])  # fmt: skip
    summary = (f"{len(d.steps)} greedy steps, {seconds:.0f} s; channel multiples (from each group's engine PEs): "
               + ", ".join(f"{m.layers[0]} {m.multiple}" for m in d.multiples) + "; groups changed: " + channels(report))  # fmt: skip
    return rows, summary


def section() -> str:
    info = machine_info()
    digits = markdown_table(
        ["PEs", "sensitivity from", "channels", "MACs", "period before, us", "after, us", "after/before",
         "test accuracy before", "after", "seconds"],
        digits_rows(),
    )  # fmt: skip
    rows, summary = mobilenet_rows()
    mobilenet = markdown_table(["MobileNetV1-0.25, 224x224", "before", "after", "after/before"], rows)
    return "\n".join([
        SECTION,
        "",
        "Written by `benchmarks/codesign.py` on " + ", ".join(f"{k}: {v}" for k, v in info.items()) + ".",
        "",
        f"`prune{{target=latency goal={GOAL:g} hw={HW} arch={ARCH} budget=N}}`: the greedy search of",
        "`compiler/prune/codesign.py` maps every candidate with `assign-engines` and prunes where the period",
        "(1/throughput) falls most per unit of sensitivity; kept channels are multiples of the engines' channel",
        "parallelism (docs/pruning.md, *Co-design*). No fine-tuning.",
        "",
        f"### Digits CNN (a frame is a batch of {BATCH} images; float32)",
        "",
        "Sensitivity measured on the first 1200 training images (`data`), or, without data, the share of",
        "filter-norm mass a step removes; accuracy on the 400-image test split.",
        "",
        digits,
        "",
        f"### MobileNetV1-0.25 (random weights, latency only), {HW} {ARCH}, {MOBILENET_BUDGET:,} PEs",
        "",
        mobilenet,
        "",
        summary + ".",
        "",
    ])  # fmt: skip


def main() -> int:
    return section_main(__doc__.splitlines()[0], section, SECTION)


if __name__ == "__main__":
    sys.exit(main())
