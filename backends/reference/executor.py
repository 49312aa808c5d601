"""The reference executor: run `@main` of a module op by op with NumPy.

A plain walk over the ops of the function body with the kernel table of `kernels.py` (no
xDSL Interpreter, which keeps every value alive to the end): each SSA value is dropped right
after its last use, so peak memory is that of the live feature maps, not of all of them.
At its last use a value is handed to the kernel writeable, when no other live value shares
its memory, so elementwise kernels (relu, add, ...) can write their result into it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Block, SSAValue

from backends.reference.kernels import read_only, run_kernel, weight_array
from compiler.errors import LayerloomError
from compiler.program import Program, WeightStore, _io_names, weights_of
from compiler.tensors import dtype_of
from dialects.nn import WeightOp


def execute(
    program: Program | ModuleOp, inputs: Mapping[str, np.ndarray], weights: WeightStore | None = None
) -> dict[str, np.ndarray]:
    """Run `program` on `inputs` (keyed by graph input name); return the outputs keyed by
    graph output name. `weights` defaults to the program's (or module's) weight store."""
    if isinstance(program, Program):
        module, source = program.module, program.source
        store = weights if weights is not None else program.weights
    else:
        module, source = program, ""
        store = weights if weights is not None else weights_of(program)
    main = main_function(module, source)
    block = main.body.block
    input_names = _io_names(main.arg_attrs, "input", len(block.args))
    output_names = _io_names(main.res_attrs, "output", len(main.function_type.outputs))

    env: dict[SSAValue, np.ndarray] = {}
    owners: dict[int, int] = {}  # id of a memory block -> how many live values use it
    for arg, array in zip(block.args, checked_inputs(main, input_names, inputs, source), strict=True):
        _bind(env, owners, arg, array)
    dying = last_uses(block)
    for unused in dying.get(None, ()):
        _drop(env, owners, unused)

    for op in block.ops:
        if isinstance(op, ReturnOp):
            results = [env[v] for v in op.operands]
            return {name: _owned(a) for name, a in zip(output_names, results, strict=True)}
        if isinstance(op, WeightOp):
            outs = [weight_array(op, store)]
        else:
            ends_here = dying.get(op, ())
            args = [
                env[v] if v in ends_here and op.operands.count(v) == 1 and owners[id(_memory(env[v]))] == 1 else read_only(env[v])
                for v in op.operands
            ]
            outs = run_kernel(op, args)
            del args
        for value, array in zip(op.results, outs, strict=True):
            _bind(env, owners, value, array)
        for value in dying.get(op, ()):
            _drop(env, owners, value)
    raise LayerloomError("@main has no func.return", source)


def _memory(array: np.ndarray) -> np.ndarray:
    """The array that owns `array`'s memory."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _bind(env: dict[SSAValue, np.ndarray], owners: dict[int, int], value: SSAValue, array: np.ndarray) -> None:
    env[value] = array
    key = id(_memory(array))
    owners[key] = owners.get(key, 0) + 1


def _drop(env: dict[SSAValue, np.ndarray], owners: dict[int, int], value: SSAValue) -> None:
    key = id(_memory(env.pop(value)))
    owners[key] -= 1
    if not owners[key]:
        del owners[key]


def main_function(module: ModuleOp, source: str = "") -> FuncOp:
    """`@main`, or the module's only function."""
    funcs = [op for op in module.ops if isinstance(op, FuncOp)]
    for f in funcs:
        if f.sym_name.data == "main":
            return f
    if len(funcs) == 1:
        return funcs[0]
    raise LayerloomError("module has no func.func @main", source)


def last_uses(block: Block) -> dict[object, list[SSAValue]]:
    """For each op, the values to drop after it (`None`: block arguments nobody uses).
    Values the return op uses are never dropped."""
    last: dict[SSAValue, object] = {arg: None for arg in block.args}
    for op in block.ops:
        for result in op.results:
            last[result] = op  # dropped right away if nothing uses it
        if not isinstance(op, ReturnOp):
            for value in op.operands:
                last[value] = op
    for value in block.last_op.operands if block.last_op is not None else ():
        last.pop(value, None)
    dying: dict[object, list[SSAValue]] = {}
    for value, op in last.items():
        dying.setdefault(op, []).append(value)
    return dying


def checked_inputs(
    main: FuncOp, names: list[str], inputs: Mapping[str, np.ndarray], source: str = ""
) -> list[np.ndarray]:
    """The inputs in argument order, as read-only views; every mismatch with the function's
    signature (missing, extra, wrong shape or dtype) is a LayerloomError."""
    missing = [n for n in names if n not in inputs]
    extra = sorted(set(inputs) - set(names))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input{'s' if len(missing) > 1 else ''} {', '.join(repr(n) for n in missing)}")
        if extra:
            parts.append(f"unknown input{'s' if len(extra) > 1 else ''} {', '.join(repr(n) for n in extra)}")
        raise LayerloomError(f"{'; '.join(parts)} (the model's inputs: {', '.join(repr(n) for n in names)})", source)
    arrays = []
    for name, t in zip(names, main.function_type.inputs, strict=True):
        assert isinstance(t, TensorType)
        array = np.asarray(inputs[name])
        expected_shape, expected_dtype = tuple(t.get_shape()), dtype_of(t)
        if array.shape != expected_shape or array.dtype != expected_dtype:
            raise LayerloomError(
                f"input '{name}' is {_describe(array.shape, array.dtype)}, expected "
                f"{_describe(expected_shape, expected_dtype)}",
                source,
            )
        view = array.view()
        view.flags.writeable = False
        arrays.append(view)
    return arrays


def _describe(shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"{'x'.join(map(str, shape)) or 'scalar'} {dtype}"


def _owned(array: np.ndarray) -> np.ndarray:
    """An output the caller may keep and modify: copies views of inputs or weights."""
    return array if array.flags.writeable and array.flags.c_contiguous else np.array(array, order="C")
