"""`C += A @ B` in one BLAS call: the cblas `?gemm` of NumPy's own BLAS with beta = 1.

`np.matmul` always calls gemm with beta = 0 (OpenBLAS then zero-fills C before adding the
product), so a bias or a residual added to a product costs one more pass over the result.
With beta = 1 the GEMM adds its product to what C already holds: the kernels fill C with
the bias (a pass OpenBLAS would spend zeroing it) or hand in the residual, and that pass
is gone. NumPy does not export its BLAS, so the cblas symbol is looked up in the library
NumPy's extension module links (OpenBLAS wheels name it `scipy_cblas_sgemm64_`); each
candidate must first compute a small product correctly. Where none is found (another
BLAS, another build), `accumulate_product` is `C += np.matmul(A, B)`: the same values,
one temporary more.

`batched_product` computes a stack of products, c[i] = a[i] @ b[i], in one call of
OpenBLAS's `?gemm_batch_strided`, which shares the stack between its threads (a product
each): `np.matmul` calls gemm once per product, and OpenBLAS does not split a product
as small as a Winograd tile row's over two threads. That call's own path for products of
at most 100^3 multiply-adds crashes in NumPy's OpenBLAS 0.3.31 wheels (a kernel table
read as addresses in DYNAMIC_ARCH builds), so only larger products take it.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
from collections.abc import Callable

import numpy as np

# (symbol, integer type): ILP64 builds suffix their names with 64_.
_CANDIDATES = (
    ("scipy_cblas_{}gemm64_", ctypes.c_int64),
    ("cblas_{}gemm64_", ctypes.c_int64),
    ("scipy_cblas_{}gemm", ctypes.c_int),
    ("cblas_{}gemm", ctypes.c_int),
)
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

Gemm = Callable[[np.ndarray, np.ndarray, np.ndarray], None]
# The smallest product (m * n * k multiply-adds) that `?gemm_batch_strided` is given, see above.
BATCH_MIN_PRODUCT = 100**3 + 1


def _numpy_blas() -> ctypes.CDLL | None:
    """NumPy's extension module as a shared library: its symbols include those of the BLAS it links."""
    for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # NumPy 2, NumPy 1.26
        try:
            return ctypes.CDLL(importlib.import_module(name).__file__)
        except (ImportError, OSError, TypeError):
            continue
    return None  # pragma: no cover - a static or unusual build


def _cblas_function(lib: ctypes.CDLL, letter: str, integer: type, routine: str = "gemm") -> Callable[..., None] | None:
    """The cblas `?{routine}` of `lib` taking `integer` ints, if it has one ("gemm_batch_strided":
    OpenBLAS exports it without the wheel's prefix and suffix)."""
    for pattern, int_type in _CANDIDATES:
        if int_type is not integer:
            continue
        name = pattern.format(letter)
        if routine != "gemm":
            name = name.replace("gemm", routine).replace("64_", "")
        try:
            fn = lib[name]
        except AttributeError:
            continue
        fn.restype = None
        return fn  # type: ignore[no-any-return]
    return None


def _cblas_gemm(lib: ctypes.CDLL, letter: str, scalar: type, integer: type) -> Gemm | None:
    """`gemm(a, b, c)`: c += a @ b through the cblas symbol, if `lib` has it."""
    fn = _cblas_function(lib, letter, integer)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int] * 3 + [integer] * 3 + [scalar, ctypes.c_void_p, integer,  # type: ignore[attr-defined]
                                                    ctypes.c_void_p, integer, scalar, ctypes.c_void_p, integer]

    def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
        size = a.itemsize
        # b may be a transposed view (columns contiguous), as a Gemm op's weight often is.
        ldb = _leading_dimension(b)
        b_trans, ldb = (_NO_TRANS, ldb) if ldb is not None else (_TRANS, b.strides[1] // size)
        fn(_ROW_MAJOR, _NO_TRANS, b_trans, c.shape[0], c.shape[1], a.shape[1], 1.0,
           a.ctypes.data, a.strides[0] // size, b.ctypes.data, ldb, 1.0, c.ctypes.data, c.strides[0] // size)

    return gemm


def _checked(gemm: Gemm | None, dtype: type) -> Gemm | None:
    """`gemm` if it computes a small product right (a wrong integer width would not)."""
    if gemm is None:
        return None
    rng = np.random.default_rng(0)
    a: np.ndarray = rng.standard_normal((5, 3)).astype(dtype)
    b: np.ndarray = rng.standard_normal((4, 3)).astype(dtype).T
    c: np.ndarray = np.ones((7, 4), dtype)[1:6]  # rows 6 apart: the leading dimension is passed, not assumed
    expected = c + a @ b
    gemm(a, b, c)
    return gemm if np.allclose(c, expected, rtol=1e-5) else None


def _cblas_gemm_batch(lib: ctypes.CDLL, letter: str, scalar: type, integer: type) -> Gemm | None:
    """`batch(a, b, c)`: c[i] = a[i] @ b[i] for C-contiguous 3-d stacks, through the cblas
    symbol, if `lib` has it."""
    fn = _cblas_function(lib, letter, integer, "gemm_batch_strided")
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int] * 3 + [integer] * 3 + [scalar, ctypes.c_void_p, integer, integer,  # type: ignore[attr-defined]
                                                    ctypes.c_void_p, integer, integer, scalar,
                                                    ctypes.c_void_p, integer, integer, integer]

    def batch(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
        count, m, k = a.shape
        n = b.shape[2]
        fn(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, 1.0, a.ctypes.data, k, m * k,
           b.ctypes.data, n, k * n, 0.0, c.ctypes.data, n, m * n, count)

    return batch


def _checked_batch(batch: Gemm | None, dtype: type) -> Gemm | None:
    """`batch` if it computes a small stack of products right (each above the size limit)."""
    if batch is None:
        return None
    rng = np.random.default_rng(0)
    a: np.ndarray = rng.standard_normal((2, 101, 100)).astype(dtype)
    b: np.ndarray = rng.standard_normal((2, 100, 102)).astype(dtype)
    c: np.ndarray = np.full((2, 101, 102), np.nan, dtype)
    batch(a, b, c)
    return batch if np.allclose(c, np.matmul(a, b), rtol=1e-4, atol=1e-4) else None


def _find(make: Callable[..., Gemm | None], check: Callable[[Gemm | None, type], Gemm | None]
          ) -> dict[np.dtype, Gemm]:
    lib = _numpy_blas()
    found: dict[np.dtype, Gemm] = {}
    if lib is None:
        return found
    for dtype, letter, scalar in ((np.float32, "s", ctypes.c_float), (np.float64, "d", ctypes.c_double)):
        for integer in (ctypes.c_int64, ctypes.c_int):
            gemm = check(make(lib, letter, scalar, integer), dtype)
            if gemm is not None:
                found[np.dtype(dtype)] = gemm
                break
    return found


def _leading_dimension(x: np.ndarray, transposed: bool = False) -> int | None:
    """The cblas leading dimension of the 2-d `x` read row by row (column by column when
    `transposed`), None when its memory has no such shape (unit steps, rows apart)."""
    size = x.itemsize
    inner, outer = (x.strides[0], x.strides[1]) if transposed else (x.strides[1], x.strides[0])
    columns = x.shape[0] if transposed else x.shape[1]
    if inner != size or outer % size or outer < columns * size or not x.flags.aligned:
        return None
    return outer // size


def _blas_ready(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:
    """Whether cblas can take the three 2-d operands as they are."""
    return (
        a.dtype == b.dtype == c.dtype and c.flags.writeable and 0 not in (*a.shape, *c.shape)
        and _leading_dimension(a) is not None and _leading_dimension(c) is not None
        and (_leading_dimension(b) is not None or _leading_dimension(b, transposed=True) is not None)
    )


def accumulate_product(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """c += a @ b for 2-d (P, K) @ (K, M) into the (P, M) `c`, in place; returns `c`."""
    gemm = CBLAS.get(c.dtype)  # defined below, once the helpers above exist
    if gemm is not None and _blas_ready(a, b, c):
        gemm(a, b, c)
    else:
        c += np.matmul(a, b)
    return c


def blas_threads() -> int:
    """How many threads NumPy's OpenBLAS uses now (1 when it cannot tell)."""
    return _GET_THREADS() if _GET_THREADS is not None else 1


def _thread_count_function() -> Callable[[], int] | None:
    lib = _numpy_blas()
    if lib is None:
        return None
    for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"):
        try:
            fn = lib[name]
        except AttributeError:
            continue
        fn.restype, fn.argtypes = ctypes.c_int, []
        return functools.partial(_at_least_one, fn)
    return None


def _at_least_one(count: Callable[[], int]) -> int:
    return max(1, int(count()))


def batched_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.matmul(a, b) for 3-d stacks (S, P, K) @ (S, K, M): a fresh (S, P, M) array."""
    batch = CBLAS_BATCH.get(a.dtype)
    count, p, k = a.shape
    m = b.shape[2]
    if (batch is None or p * m * k < BATCH_MIN_PRODUCT or a.dtype != b.dtype or b.shape[:2] != (count, k)
            or not (a.flags.c_contiguous and b.flags.c_contiguous)):
        return np.matmul(a, b)
    c = np.empty((count, p, m), dtype=a.dtype)
    batch(a, b, c)
    return c


CBLAS: dict[np.dtype, Gemm] = _find(_cblas_gemm, _checked)
CBLAS_BATCH: dict[np.dtype, Gemm] = _find(_cblas_gemm_batch, _checked_batch)
_GET_THREADS = _thread_count_function()
