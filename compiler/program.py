"""A Program is an IR module plus the weight store its `nn.weight` handles point into.

Weights never live in the IR as Python lists: the module holds handles, the arrays live in
a `WeightStore` (NumPy), saved as `weights.npz` beside the printed `.mlir`. Passes reach
the store of the module they transform through `weights_of(module)`.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import tempfile
import weakref
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.dialects.builtin import BytesAttr, DenseIntOrFPElementsAttr, ModuleOp, StringAttr, TensorType
from xdsl.dialects.func import FuncOp
from xdsl.printer import Printer

from compiler.errors import LayerloomError
from compiler.tensors import dtype_of, numpy_dtype

WEIGHTS_FILE = "weights.npz"
MODEL_FILE = "model.mlir"


class WeightStore:
    """Named NumPy arrays. Handles are valid MLIR string literals and unique in a store."""

    def __init__(self, arrays: dict[str, np.ndarray] | None = None) -> None:
        self._arrays: dict[str, np.ndarray] = dict(arrays or {})

    def __getitem__(self, handle: str) -> np.ndarray:
        try:
            return self._arrays[handle]
        except KeyError:
            raise LayerloomError(f"weight '{handle}' is not in the weight store") from None

    def __contains__(self, handle: str) -> bool:
        return handle in self._arrays

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        return iter(self._arrays.items())

    def add(self, array: np.ndarray, hint: str = "w") -> str:
        """Store `array` under a fresh handle derived from `hint`; return the handle."""
        base = re.sub(r"[^A-Za-z0-9_.]", "_", hint) or "w"
        handle, n = base, 1
        while handle in self._arrays:
            handle, n = f"{base}_{n}", n + 1
        self._arrays[handle] = _contiguous(array)
        return handle

    def set(self, handle: str, array: np.ndarray) -> None:
        self._arrays[handle] = _contiguous(array)

    def copy(self) -> WeightStore:
        # Arrays are treated as immutable (passes store new arrays), so sharing is safe.
        return WeightStore(self._arrays)

    def keep_only(self, handles: builtins.set[str]) -> None:
        for h in [h for h in self._arrays if h not in handles]:
            del self._arrays[h]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())

    def save(self, path: str | Path) -> None:
        atomic_write_with(Path(path), lambda tmp: np.savez(tmp, **self._arrays))  # type: ignore[arg-type]

    @staticmethod
    def load(path: str | Path) -> WeightStore:
        p = Path(path)
        if not p.is_file():
            raise LayerloomError("weight file not found", str(p))
        try:
            with np.load(p, allow_pickle=False) as data:
                return WeightStore({k: data[k] for k in data.files})
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # a damaged file: a bad CRC, a cut zip
            raise LayerloomError(f"cannot read weights: {e}", str(p)) from None


def _contiguous(array: np.ndarray) -> np.ndarray:
    # np.ascontiguousarray turns a 0-d array into shape (1,); keep scalars 0-d.
    a = np.asarray(array)
    return np.ascontiguousarray(a).reshape(a.shape)


_STORES: weakref.WeakKeyDictionary[ModuleOp, WeightStore] = weakref.WeakKeyDictionary()


def attach_weights(module: ModuleOp, store: WeightStore) -> None:
    _STORES[module] = store


def weights_of(module: ModuleOp) -> WeightStore:
    """The weight store of `module` (an empty one is attached on first use)."""
    store = _STORES.get(module)
    if store is None:
        store = WeightStore()
        _STORES[module] = store
    return store


@dataclass
class Program:
    """An IR module and its weights. `source` names where it came from, for messages."""

    module: ModuleOp
    weights: WeightStore = field(default_factory=WeightStore)
    source: str = ""

    def __post_init__(self) -> None:
        attach_weights(self.module, self.weights)
        internalize_inline_weights(self.module, self.weights, self.source)

    @property
    def main(self) -> FuncOp:
        for op in self.module.ops:
            if isinstance(op, FuncOp):
                return op
        raise LayerloomError("module has no func.func", self.source)

    @property
    def input_names(self) -> list[str]:
        return io_names(self.main.arg_attrs, "input", len(self.main.function_type.inputs))

    @property
    def output_names(self) -> list[str]:
        return io_names(self.main.res_attrs, "output", len(self.main.function_type.outputs))

    @property
    def input_types(self) -> list[TensorType]:
        return [t for t in self.main.function_type.inputs if isinstance(t, TensorType)]

    @property
    def output_types(self) -> list[TensorType]:
        return [t for t in self.main.function_type.outputs if isinstance(t, TensorType)]

    def clone(self) -> Program:
        return Program(self.module.clone(), self.weights.copy(), self.source)

    def text(self, inline_weights: bool = False) -> str:
        return print_module(self.module, self.weights if inline_weights else None)

    def save(self, directory: str | Path, inline_weights: bool = False) -> None:
        """Write `model.mlir` and `weights.npz` into `directory` (each file atomically)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.drop_unused_weights()
        text = self.text(inline_weights)
        atomic_write_with(d / MODEL_FILE, lambda tmp: Path(tmp).write_text(text))
        self.weights.save(d / WEIGHTS_FILE)

    def drop_unused_weights(self) -> None:
        from dialects.nn import WeightOp

        self.weights.keep_only({op.handle.data for op in self.module.walk() if isinstance(op, WeightOp)})

    @staticmethod
    def load(path: str | Path, weights: str | Path | None = None) -> Program:
        """Load `model.mlir` (or a folder holding it) and the `weights.npz` beside it."""
        from compiler.registry import parse_module

        p = Path(path)
        if p.is_dir():
            p = p / MODEL_FILE
        if not p.is_file():
            raise LayerloomError("file not found", str(p))
        wpath = Path(weights) if weights is not None else p.parent / WEIGHTS_FILE
        store = WeightStore.load(wpath) if (weights is not None or wpath.is_file()) else WeightStore()
        module = parse_module(read_text(p), str(p))
        return Program(module, store, str(p))


def read_text(path: Path) -> str:
    """A text file of a build folder, or a LayerloomError naming it (missing, unreadable, not UTF-8)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise LayerloomError("file not found", str(path)) from None
    except OSError as e:
        raise LayerloomError(f"cannot read: {e.strerror}", str(path)) from None
    except UnicodeDecodeError as e:
        raise LayerloomError(f"not UTF-8 text (byte {e.start}): the file is damaged", str(path)) from None


def read_json(path: Path) -> Any:
    """A JSON file of a build folder, or a LayerloomError naming it."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise LayerloomError(f"not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}", str(path)) from None


def io_names(attrs: object, kind: str, count: int) -> list[str]:
    """The graph input or output names kept on func.func (`nn.name`), else `input0`, `output1` ..."""
    names: list[str] = []
    entries = list(getattr(attrs, "data", ()) or ())
    for i in range(count):
        name = None
        if i < len(entries):
            value = entries[i].data.get("nn.name")
            if isinstance(value, StringAttr):
                name = value.data
        names.append(name or f"{kind}{i}")
    return names


def check_input_names(names: list[str], given: Iterable[str], what: str, where: str) -> None:
    """A LayerloomError naming the inputs missing from `given` and those it has beyond
    `names` (the graph's inputs), if any: "`what`: missing input 'x'; unknown input 'y' ..."."""
    given = set(given)
    missing = [n for n in names if n not in given]
    extra = sorted(given - set(names))
    if not missing and not extra:
        return
    parts = [f"{kind} input{'s' if len(found) > 1 else ''} {', '.join(repr(n) for n in found)}"
             for kind, found in (("missing", missing), ("unknown", extra)) if found]
    raise LayerloomError(f"{what}{'; '.join(parts)} (the model's inputs: {', '.join(repr(n) for n in names)})", where)


def array_of(attr: DenseIntOrFPElementsAttr, t: TensorType) -> np.ndarray:
    """The NumPy array held by an inline dense attribute (a splat is broadcast)."""
    dtype = dtype_of(t)
    data = np.frombuffer(attr.data.data, dtype=np.uint8 if dtype == np.bool_ else dtype)
    data = data.astype(dtype) if dtype == np.bool_ else data
    shape = t.get_shape()
    return np.broadcast_to(data, shape).copy() if data.size == 1 else data.reshape(shape).copy()


def dense_attr_of(array: np.ndarray, t: TensorType) -> DenseIntOrFPElementsAttr:
    dtype = numpy_dtype(t.get_element_type())
    raw = np.ascontiguousarray(array, dtype=dtype)
    if dtype == np.bool_:
        raw = raw.astype(np.uint8)
    return DenseIntOrFPElementsAttr(t, BytesAttr(raw.tobytes()))  # type: ignore[arg-type]


def internalize_inline_weights(module: ModuleOp, store: WeightStore, source: str = "") -> None:
    """Move inline `value`s of `nn.weight` ops into the store (handles stay as written). One
    handle given two different inline values is an error: the store keeps one array a handle,
    so one of the ops would silently read the other's."""
    from dialects.nn import WeightOp

    inlined: dict[str, np.ndarray] = {}
    for op in module.walk():
        if isinstance(op, WeightOp) and op.value is not None:
            assert isinstance(op.result.type, TensorType)
            handle, array = op.handle.data, array_of(op.value, op.result.type)
            earlier = inlined.setdefault(handle, array)
            if earlier is not array and not (earlier.dtype == array.dtype and earlier.shape == array.shape
                                              and earlier.tobytes() == array.tobytes()):
                raise LayerloomError(f'nn.weight "{handle}" is given two different inline values', source)
            store.set(handle, array)
            del op.properties["value"]


def print_module(module: ModuleOp, inline_from: WeightStore | None = None) -> str:
    """Print `module`; with `inline_from`, every weight's data is printed inline."""
    from io import StringIO

    from dialects.nn import WeightOp

    target = module
    if inline_from is not None:
        target = module.clone()
        for op in target.walk():
            if isinstance(op, WeightOp) and op.handle.data in inline_from:
                assert isinstance(op.result.type, TensorType)
                op.properties["value"] = dense_attr_of(inline_from[op.handle.data], op.result.type)
    out = StringIO()
    Printer(stream=out).print_op(target)
    out.write("\n")
    return out.getvalue()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_with(path: Path, write: object) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        assert callable(write)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
