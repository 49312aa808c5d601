"""Helpers shared by the passes: reading weights behind SSA values, creating new weights,
carrying the ONNX node name (`name` property) from old ops to new ones, and writing a
pass's text report."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.pattern_rewriter import PatternRewriter

from compiler.program import WeightStore, atomic_write_with
from compiler.tensors import dtype_of, tensor_type
from dialects.nn import WeightOp


def weight_op_of(value: SSAValue | None) -> WeightOp | None:
    """The `nn.weight` op that defines `value`, or None (block argument, other op, absent)."""
    if value is None:
        return None
    owner = value.owner
    return owner if isinstance(owner, WeightOp) else None


def weight_array(value: SSAValue | None, store: WeightStore) -> np.ndarray | None:
    """The array behind `value` if it is an `nn.weight` whose handle is in `store`."""
    op = weight_op_of(value)
    if op is None or op.handle.data not in store:
        return None
    return store[op.handle.data]


def new_weight(store: WeightStore, array: np.ndarray, hint: str, name: StringAttr | None = None) -> WeightOp:
    """Store `array` (a new array: never one that is already in a store) under a fresh
    handle derived from `hint` and return the `nn.weight` op that refers to it."""
    handle = store.add(array, hint)
    properties = {"handle": StringAttr(handle)}
    if name is not None:
        properties["name"] = name
    return WeightOp.build(properties=properties, result_types=[tensor_type(array.shape, array.dtype)])


def as_dtype_of(array: np.ndarray, value: SSAValue) -> np.ndarray:
    """`array` converted to the element type of `value`'s tensor type."""
    return np.asarray(array, dtype=dtype_of(value.type))


def copy_name(source: Operation, target: Operation) -> None:
    """Give `target` the ONNX node name of `source` (if it has one)."""
    name = source.properties.get("name")
    if name is not None:
        target.properties["name"] = name


def sole_user(value: SSAValue) -> Operation | None:
    """The op that uses `value`, if it is used exactly once; else None."""
    return value.get_user_of_unique_use() if value.has_one_use() else None


def erase_unused(rewriter: PatternRewriter, ops: list[Operation | None]) -> None:
    """Erase each op in `ops` whose results are all unused (in order, so a chain of
    newly dead producers can be listed consumer first)."""
    for op in ops:
        if op is not None and op.parent is not None and all(not r.uses for r in op.results):
            rewriter.erase(op)


def write_report(text: str, destination: str) -> None:
    """A pass's `report=FILE` option: `text` into FILE (atomically), or to stderr for `-`
    (stdout carries the IR)."""
    if destination == "-":
        sys.stderr.write(text)
    else:
        atomic_write_with(Path(destination), lambda tmp: Path(tmp).write_text(text))
