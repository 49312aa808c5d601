"""layerloom's compiler package: the Python entry points.

    from compiler import import_onnx, run_pipeline
    program = import_onnx("model.onnx")
    run_pipeline(program, "canonicalize,fold-batchnorm,fuse-activation")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from compiler.errors import LayerloomError, ModelError, UnsupportedError
from compiler.program import Program, WeightStore

if TYPE_CHECKING:
    from compiler.onnx_export import export_onnx
    from compiler.onnx_import import import_onnx
    from compiler.pipeline import run_pipeline
    from passes.quantize import quantize

__all__ = [
    "LayerloomError",
    "ModelError",
    "Program",
    "UnsupportedError",
    "WeightStore",
    "export_onnx",
    "import_onnx",
    "quantize",
    "run_pipeline",
]

# Heavy modules (onnx, passes) load on first use, so `layerloom --help` stays quick.
_LAZY = {
    "import_onnx": "compiler.onnx_import",
    "run_pipeline": "compiler.pipeline",
    "quantize": "passes.quantize",
    "export_onnx": "compiler.onnx_export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'compiler' has no attribute {name!r}")
