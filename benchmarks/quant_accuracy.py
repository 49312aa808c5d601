"""Int8 accuracy benchmark (issue 3): the digits CNN and MLP (examples/train_digits.py) in
float and quantized to int8 by layerloom, for each calibrator and scheme, beside
onnxruntime's `quantize_static` (QDQ, per-channel int8 weights, int8 activations, after its
`quant_pre_process`), all calibrated on the same images and scored on the same test split.

    .venv/bin/python benchmarks/quant_accuracy.py               # print the table
    .venv/bin/python benchmarks/quant_accuracy.py --write-docs  # and update docs/performance.md

Goal: int8 loses at most 0.5 points of top-1 and is never below onnxruntime's int8. With
--write-docs the section also gets the int8 speed of ResNet-50 (benchmarks/quant_speed.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

MODELS = ("cnn", "mlp")
CALIBRATORS = ("minmax", "percentile", "entropy")
SCHEMES = ("fixed", "pow2")
CALIBRATION_IMAGES = 1200  # the first images of the training split (a multiple of the batch, 400)
GOAL_LOSS = 0.005
DOCS = ROOT / "docs" / "performance.md"
SECTION = "## Accuracy"


def onnxruntime_int8(kind: str, x_calibration: np.ndarray, folder: Path) -> Path:
    """The model through onnxruntime's pre-processing and quantize_static (QDQ, per-channel)."""
    import train_digits
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": x_calibration[i : i + 1]} for i in range(len(x_calibration))])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    pre, out = folder / f"{kind}_pre.onnx", folder / f"{kind}_int8.onnx"
    quant_pre_process(str(ROOT / "examples" / train_digits.MODELS[kind]), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def measure() -> dict[str, dict[str, float]]:
    """Top-1 (fraction) per model: float, each calibrator x scheme, onnxruntime float and int8."""
    import logging

    import train_digits

    from backends.reference import execute
    from benchmarks.common import ort_session
    from compiler import import_onnx, quantize, run_pipeline

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantizer advises pre-processing, which it got
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in MODELS:
            x_train, _, x_test, y_test = train_digits.digits_split(flat=kind == "mlp")
            calibration = x_train[:CALIBRATION_IMAGES]
            path = ROOT / "examples" / train_digits.MODELS[kind]
            program = run_pipeline(import_onnx(path, input_shapes={"input": x_test.shape}), "canonicalize,fold-batchnorm")

            def top1(logits: np.ndarray, y: np.ndarray = y_test) -> float:
                return float(np.mean(logits.argmax(axis=1) == y))

            row = {"float": top1(execute(program, {"input": x_test})["logits"])}
            for scheme in SCHEMES:
                for calibrator in CALIBRATORS:
                    q = quantize(program, [{"input": calibration}], scheme=scheme, calibrator=calibrator)
                    row[f"{scheme}/{calibrator}"] = top1(execute(q, {"input": x_test})["logits"])
            import onnx

            int8 = onnxruntime_int8(kind, calibration, Path(tmp))
            row["onnxruntime float"] = top1(ort_session(onnx.load(str(path))).run(None, {"input": x_test})[0])
            row["onnxruntime int8"] = top1(ort_session(onnx.load(str(int8))).run(None, {"input": x_test})[0])
            results[kind] = row
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    from benchmarks.common import markdown_table

    header = ["model", "float", *(f"{s} {c}" for s in SCHEMES for c in CALIBRATORS), "onnxruntime int8"]
    body = []
    for kind, row in results.items():
        cells = [kind, f"{100 * row['float']:.2f}"]
        for s in SCHEMES:
            for c in CALIBRATORS:
                value, loss = row[f"{s}/{c}"], row["float"] - row[f"{s}/{c}"]
                ok = loss <= GOAL_LOSS + 1e-9 and value >= row["onnxruntime int8"] - 1e-9
                cells.append(f"{100 * value:.2f}" + ("" if ok else " (!)"))
        cells.append(f"{100 * row['onnxruntime int8']:.2f}")
        body.append(cells)
    return markdown_table(header, body)


def verdict(results: dict[str, dict[str, float]]) -> str:
    worst = max(row["float"] - row[f"{s}/{c}"] for row in results.values() for s in SCHEMES for c in CALIBRATORS)
    behind = [f"{kind} {s}/{c}" for kind, row in results.items() for s in SCHEMES for c in CALIBRATORS
              if row[f"{s}/{c}"] < row["onnxruntime int8"] - 1e-9]
    parts = [f"largest loss against float: {100 * worst:.2f} points (goal: at most {100 * GOAL_LOSS:.1f})"]
    parts.append("never below onnxruntime's int8" if not behind else f"below onnxruntime's int8: {', '.join(behind)}")
    return "; ".join(parts)


def section(results: dict[str, dict[str, float]], speed: dict | None) -> str:
    from benchmarks.common import machine_info

    info = machine_info()
    lines = [
        SECTION,
        "",
        "Issue 3's numbers: top-1 (%) of the digits models (`examples/train_digits.py`, test split of",
        "400 images) in float and in int8, for each calibrator and scheme of the `quantize` pass,",
        "beside onnxruntime's `quantize_static` (QDQ, per-channel int8 weights, int8 activations, after",
        f"`quant_pre_process`). Both are calibrated on the first {CALIBRATION_IMAGES} training images. Reproduce with",
        "",
        "```sh",
        ".venv/bin/python benchmarks/quant_accuracy.py --write-docs",
        "```",
        "",
        table(results),
        "",
        f"Goal: int8 loses at most {100 * GOAL_LOSS:.1f} points and is never below onnxruntime's int8 "
        "((!) marks a miss). Result: " + verdict(results) + ". One image is 0.25 points.",
        "",
        "On 400 test images the differences are single images: onnxruntime's int8 CNN happens to",
        "classify one image more than its float model does, and a miss above is one image below",
        "that. `pow2` (every scale a power of two, as the DPU needs) is up to a factor of two",
        "coarser than `fixed` per tensor, which shows as a one-image spread between calibrators.",
        "`tests/test_quantize.py` holds every configuration to the half-point goal.",
        "",
    ]
    if speed is not None:
        from benchmarks.quant_speed import GOAL_RATIO
        from benchmarks.quant_speed import table as speed_table

        lines += [
            "### Int8 speed (ResNet-50)",
            "",
            "The light ResNet-50 (seeded random weights, 1x3x224x224) through the reference executor,",
            "float against int8 (calibrated on two seeded inputs), median of "
            f"{speed['repeats']} alternating runs per program; ratio = int8 / float (goal: at most "
            f"{GOAL_RATIO}). Reproduce with `.venv/bin/python benchmarks/quant_speed.py`.",
            "",
            speed_table(speed),
            "",
            "The integer convolutions run the same float32 BLAS GEMMs as the float ones (exact: the",
            "input channels are cut so that every partial sum stays below 2^24); the difference is",
            "the output stage. `pow2` evaluates it in float32 (one floor per element), `fixed` needs",
            "float64 for its 31-bit multipliers and, on the layers without a relu (the bottlenecks'",
            "last convs, about 60 % of the outputs), the tie correction of its double rounding.",
            "With two threads the output stages run on both cores while the float run's epilogue",
            "does not, and a loaded machine slows the float run's BLAS threads more.",
            "",
            f"Machine: {info['cpu']}, {info['cores']} cores, load average {speed['load']:.2f} during the run "
            f"({info['date']}; numpy {info['numpy']}).",
            "",
        ]
    return "\n".join(lines)


def write_docs(text: str, path: Path = DOCS) -> None:
    """Replace the Accuracy section of `path` (up to the next `## ` heading), keeping the rest."""
    from compiler.program import atomic_write_with

    current = path.read_text() if path.exists() else "# Performance\n"
    start = current.find(SECTION + "\n")
    if start < 0:
        current = current.rstrip("\n") + "\n\n" + text
    else:
        end = current.find("\n## ", start + len(SECTION))
        current = current[:start] + text.rstrip("\n") + "\n" + (current[end:] if end >= 0 else "")
    atomic_write_with(path, lambda tmp: Path(tmp).write_text(current.rstrip("\n") + "\n"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="int8 vs float top-1 of the digits models, beside onnxruntime's int8")
    parser.add_argument("--write-docs", action="store_true", help="update the Accuracy section of docs/performance.md "
                                                                  "(with the ResNet-50 int8 speed)")
    parser.add_argument("--speed-threads", default=f"1,{os.cpu_count() or 1}", help="thread counts of the speed run")
    args = parser.parse_args(argv)
    results = measure()
    print(table(results))
    print(verdict(results))
    if args.write_docs:
        from benchmarks.quant_speed import measure as measure_speed
        from benchmarks.quant_speed import table as speed_table

        speed = measure_speed(sorted({int(t) for t in args.speed_threads.split(",")}), 7)
        print(speed_table(speed))
        write_docs(section(results, speed))
        print(f"updated {DOCS.relative_to(ROOT)} ({SECTION})")

if __name__ == "__main__":
    main()
