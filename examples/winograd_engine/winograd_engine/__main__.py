"""Compare the Winograd engine with the SEML engine of the packaged target on the 3x3
convolutions of a model (default: ResNet-50 from the onnx package's test data).

    python -m winograd_engine [MODEL.onnx]
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx

from compiler import import_onnx
from compiler.cost import layer_cost
from compiler.engines import engine_kinds, workloads
from compiler.hw import load_target
from winograd_engine import TARGET

RESNET50 = Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"


def main(argv: list[str]) -> int:
    model = Path(argv[0]) if argv else RESNET50
    target = load_target(TARGET)
    wino, winograd = target.engine("wino"), engine_kinds()["winograd"]
    convs_3x3 = [w for w in workloads(import_onnx(model).module) if w.op == "conv2d" and w.window == 9]
    width = max([len(w.name) for w in convs_3x3] + [5])
    print(f"{'layer':{width}}  {'C x E x F -> M':>16}  {'winograd':>9}  {'seml':>9}  speed-up   (compute cycles)")
    total = {"wino": 0, "seml": 0}
    for layer in convs_3x3:
        support = winograd.supports(layer, wino)
        if not support:
            print(f"{layer.name:{width}}  refused: {support.reason}")
            continue
        cycles = {name: layer_cost(layer, target, name).compute_cycles for name in total}
        for name in total:
            total[name] += cycles[name]
        shape = f"{layer.in_channels}x{layer.out_h}x{layer.out_w} -> {layer.out_channels}"
        print(
            f"{layer.name:{width}}  {shape:>16}  {cycles['wino']:9}  {cycles['seml']:9}  {cycles['seml'] / cycles['wino']:7.2f}x"
        )
    print(f"{'total':{width}}  {'':>16}  {total['wino']:9}  {total['seml']:9}  {total['seml'] / total['wino']:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
