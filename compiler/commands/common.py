"""What `estimate` and `explore` share: their flags' parsing and the model's layer graph."""

from __future__ import annotations

import argparse
from pathlib import Path

from compiler.errors import LayerloomError

ARCH_HELP = "seml (one reused engine), sesl (one engine per layer, a pipeline) or hybrid (both)"


def add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the ONNX model")
    p.add_argument("--hw", required=True, metavar="TARGET", help="a bundled hardware target (e.g. zcu102) or a .hw file")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                   help="fix an input's shape, e.g. input=1x3x224x224 (repeatable)")  # fmt: skip


def parse_archs(text: str) -> list[str]:
    from compiler.mapping import ARCHS

    archs = [a.strip().lower() for a in text.split(",") if a.strip()]
    bad = [a for a in archs if a not in ARCHS]
    if bad or not archs:
        raise LayerloomError(f"unknown architecture '{bad[0] if bad else text}' (one of {', '.join(ARCHS)})", "--arch")
    return list(dict.fromkeys(archs))


def default_archs(target: object) -> list[str]:
    """The architectures a target has engines for: seml, sesl, hybrid (or only seml)."""
    from compiler.mapping import pipeline_engine, reused_engine

    archs = (["seml"] if reused_engine(target) else []) + (["sesl"] if pipeline_engine(target) else [])  # type: ignore[arg-type]
    if not archs:
        raise LayerloomError(f"target '{target.name}' has no engines to map onto", target.source)  # type: ignore[attr-defined]
    return archs + ["hybrid"] if len(archs) == 2 else archs


def parse_budgets(text: str) -> list[int]:
    budgets = []
    for item in text.split(","):
        try:
            value = int(item.strip())
        except ValueError:
            value = 0
        if value < 1:
            raise LayerloomError(f"'{item.strip()}' is not a positive number of PEs", "--budget")
        budgets.append(value)
    return list(dict.fromkeys(budgets))


def load_program(model: str, input_shape: list[str]) -> object:
    """Import the model and run the default graph pipeline (what `compile` runs)."""
    from compiler.cli import DEFAULT_PIPELINE, parse_input_shapes
    from compiler.onnx_import import import_onnx
    from compiler.pipeline import run_pipeline

    shapes = parse_input_shapes(input_shape)
    path = Path(model)
    if not path.is_file():
        raise LayerloomError("file not found" if not path.exists() else "not a file", str(path))
    return run_pipeline(import_onnx(str(path), shapes or None), DEFAULT_PIPELINE)
