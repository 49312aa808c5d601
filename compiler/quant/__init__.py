"""Quantization.

- `intmath`: the integer semantics, the one implementation of docs/quantization.md;
- `calibrate`: calibration data, the calibrators (min-max, percentile, entropy) and the
  float runs that observe every tensor;
- `lowering`: from chosen scales and zero points to qnn ops (`Lowerer`), shared by the
  quantize pass (passes/quantize.py) and the QDQ importer (compiler/onnx_qdq.py).

`from compiler.quant import quantize` is the pass's Python form (also `from compiler import
quantize`): `quantize(program, calibration, **options) -> Program`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from passes.quantize import quantize

__all__ = ["quantize"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: dialects.qnn imports intmath from this package, and the pass
    # imports dialects.qnn.
    if name == "quantize":
        from passes.quantize import quantize

        return quantize
    raise AttributeError(f"module 'compiler.quant' has no attribute {name!r}")
