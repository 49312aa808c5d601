"""Mapping between NumPy dtypes and MLIR element / tensor types."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import (
    BFloat16Type,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    Signedness,
    TensorType,
)
from xdsl.ir import Attribute

from compiler.errors import UnsupportedError

_BY_DTYPE: dict[np.dtype, Attribute] = {
    np.dtype(np.float16): Float16Type(),
    np.dtype(np.float32): Float32Type(),
    np.dtype(np.float64): Float64Type(),
    np.dtype(np.int8): IntegerType(8),
    np.dtype(np.int16): IntegerType(16),
    np.dtype(np.int32): IntegerType(32),
    np.dtype(np.int64): IntegerType(64),
    np.dtype(np.uint8): IntegerType(8, Signedness.UNSIGNED),
    np.dtype(np.uint16): IntegerType(16, Signedness.UNSIGNED),
    np.dtype(np.uint32): IntegerType(32, Signedness.UNSIGNED),
    np.dtype(np.uint64): IntegerType(64, Signedness.UNSIGNED),
    np.dtype(np.bool_): IntegerType(1),
}
_BY_TYPE: dict[Attribute, np.dtype] = {t: d for d, t in _BY_DTYPE.items()}
# Signless integers mean signed ones (MLIR's convention for tensors of iN).
_BY_TYPE[IntegerType(8, Signedness.SIGNED)] = np.dtype(np.int8)
_BY_TYPE[IntegerType(32, Signedness.SIGNED)] = np.dtype(np.int32)


def element_type(dtype: np.dtype | type) -> Attribute:
    d = np.dtype(dtype)
    if d not in _BY_DTYPE:
        raise UnsupportedError(f"element type {d} is not supported")
    return _BY_DTYPE[d]


def numpy_dtype(element: Attribute) -> np.dtype:
    if element not in _BY_TYPE:
        if isinstance(element, BFloat16Type):
            raise UnsupportedError("bf16 tensors are not supported")
        raise UnsupportedError(f"element type {element} is not supported")
    return _BY_TYPE[element]


def tensor_type(shape: Sequence[int], dtype: np.dtype | type | Attribute) -> TensorType:
    elt = dtype if isinstance(dtype, Attribute) else element_type(dtype)
    return TensorType(elt, [int(d) for d in shape])


def dtype_of(t: Attribute) -> np.dtype:
    assert isinstance(t, TensorType)
    return numpy_dtype(t.get_element_type())
