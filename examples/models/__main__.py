"""Write one of the example models as an .onnx file and print its size in layers,
parameters and MACs (counted by layerloom's own analysis of the imported model).

    python -m examples.models mobilenet_v1 -o build/mobilenet_v1.onnx
    python -m examples.models mobilenet_v1 --width 0.25 --resolution 128 -o build/mbv1_025_128.onnx
    python -m examples.models tiny_yolov3 -o build/tiny_yolov3.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

from examples.models.builders import MODELS, SEED, build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.models", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(MODELS), help="which network")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--width", type=float, default=1.0, help="channel (width) multiplier (default 1.0)")
    parser.add_argument("--resolution", type=int, help="input side in pixels (default 224; 416 for tiny_yolov3)")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the random weights")
    args = parser.parse_args(argv)
    try:
        model = build(args.name, args.width, args.resolution, args.seed)
    except ValueError as e:
        parser.error(str(e))

    from compiler import import_onnx
    from compiler.analysis import analyze, totals

    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, args.output)
    total = totals(analyze(import_onnx(args.output)))
    print(f"wrote {args.output}: {total.layers} layers, {total.params / 1e6:.2f} M parameters, "
          f"{total.macs / 1e6:.0f} M MACs")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
