"""The reference executor: run `@main` of a module op by op with NumPy.

A plain walk over the ops of the function body with the kernel table of `kernels.py` (no
xDSL Interpreter, which keeps every value alive to the end): each SSA value is dropped right
after its last use, so peak memory is that of the live feature maps, not of all of them.
At its last use a value is handed to the kernel writeable, when no other live value shares
its memory, so elementwise kernels (relu, add, ...) can write their result into it.

The walk is planned once per module and kept while the module stays as it was (`_Plan`):
values live in numbered slots, each op's kernel has read its attributes (`kernels.prepare`),
weights are looked up once, and convolutions join the ops around them (`_conv_fusions`): one
whose only reader is an add (a residual connection), optionally followed by a relu, runs as
one step that accumulates its GEMM into the other addend: no pass over the map for the add;
one whose only reader is another conv hands it its bias channel or its activation, and
one whose only reader is a max pool leaves its relu to the (smaller) pooled map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Block, Operation, SSAValue

from backends.reference.kernels import (
    KERNELS,
    Activation,
    ConvFusion,
    Prepared,
    activation_of,
    copies_input,
    fusable,
    fused_activation,
    layer_name,
    makes_ones_channel,
    pool_commutes,
    prepare,
    read_only,
    takes_ones_channel,
    weight_array,
)
from compiler.errors import LayerloomError
from compiler.program import Program, WeightStore, check_input_names, io_names, weights_of
from compiler.tensors import dtype_of
from dialects import nn
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
    plan = _plan_of(module, source)
    arrays = checked_inputs(plan.main, plan.input_names, inputs, source)
    return plan.run(arrays, store)


# How a step receives an operand: the array itself, writeable when no other live value
# shares its memory (its last use), a read-only view, or as it is (weights: read-only).
_HANDOVER, _VIEW, _CONSTANT = range(3)


@dataclass(frozen=True)
class _Step:
    run: Prepared
    operands: tuple[int, ...]  # slots
    handover: tuple[int, ...]  # per operand: _HANDOVER, _VIEW or _CONSTANT
    results: tuple[int, ...]
    dtypes: tuple[np.dtype, ...]  # of the results
    drops: tuple[int, ...]  # slots whose last use this step is
    where: str  # the layer's name and op, for errors


class _Plan:
    """The walk over one function body, with every per-op decision taken in advance."""

    def __init__(self, main: FuncOp, source: str) -> None:
        self.main, self.source = main, source
        block = main.body.block
        self.input_names = io_names(main.arg_attrs, "input", len(block.args))
        self.output_names = io_names(main.res_attrs, "output", len(main.function_type.outputs))
        self.signature = _signature(main)
        slots: dict[SSAValue, int] = {}

        def slot(value: SSAValue) -> int:
            return slots.setdefault(value, len(slots))

        self.inputs = [slot(arg) for arg in block.args]
        self.weights: list[tuple[int, WeightOp]] = []
        steps: list[tuple[Prepared, list[SSAValue], Sequence[SSAValue], Operation]] = []
        fused = _residual_fusions(block)
        absorbed = {op for key, pattern in fused.items() for op in pattern if op is not None and op is not key}
        options, pool_activations = _conv_fusions(block, fused)
        returned: list[SSAValue] = []
        for op in block.ops:
            if isinstance(op, ReturnOp):
                returned = list(op.operands)
                break
            if isinstance(op, WeightOp):
                if op.result.uses:
                    self.weights.append((slot(op.result), op))
            elif op in fused:
                conv, add, act = fused[op]
                residual = add.operands[1] if add.operands[0] is conv.results[0] else add.operands[0]
                steps.append((prepare(conv, options[conv]), [*conv.operands, residual], (act or add).results, conv))
            elif op not in absorbed:
                steps.append((prepare(op, options.get(op), pool_activations.get(op)), list(op.operands), op.results, op))
        self.outputs = [slot(v) for v in returned]
        # The last step that reads each value; values nobody reads die where they are made.
        last: dict[SSAValue, int] = {arg: -1 for arg in block.args}
        for index, (_, operands, results, _) in enumerate(steps):
            last.update(dict.fromkeys(results, index))
            last.update(dict.fromkeys(operands, index))
        for value in returned:
            last.pop(value, None)
        constant = {op.result for _, op in self.weights}
        drops: dict[int, list[int]] = {}
        for value, index in last.items():
            if value not in constant:
                drops.setdefault(index, []).append(slot(value))
        self.unused_inputs = drops.pop(-1, [])
        self.steps = [
            _Step(
                run,
                tuple(slot(v) for v in operands),
                tuple(
                    _CONSTANT if v in constant else _HANDOVER if last.get(v) == index and operands.count(v) == 1 else _VIEW
                    for v in operands
                ),
                tuple(slot(v) for v in results),
                tuple(dtype_of(v.type) for v in results),
                tuple(drops.get(index, ())),
                _where(op),
            )
            for index, (run, operands, results, op) in enumerate(steps)
        ]
        self.slot_count = len(slots)
        self._weights_seen: dict[int, tuple[object, np.ndarray]] = {}

    def run(self, inputs: list[np.ndarray], store: object) -> dict[str, np.ndarray]:
        env: list[Any] = [None] * self.slot_count  # slot -> its live array (None: not live)
        owners: dict[int, int] = {}  # id of a memory block -> how many live values use it
        for s, array in zip(self.inputs, inputs, strict=True):
            _bind(env, owners, s, array)
        for s in self.unused_inputs:
            _drop(env, owners, s)
        for s, op in self.weights:
            env[s] = self._weight(s, op, store)
        with np.errstate(all="ignore"):  # inf/nan are ONNX semantics, not errors
            for step in self.steps:
                args = [
                    env[s] if how == _CONSTANT or how == _HANDOVER and owners[id(_memory(env[s]))] == 1 else read_only(env[s])
                    for s, how in zip(step.operands, step.handover, strict=True)
                ]
                try:
                    outs = step.run(args)
                except LayerloomError as e:  # e.g. an int8 layer whose accumulator leaves int32
                    if e.where:
                        raise
                    raise type(e)(e.message, f"{self.source}: {step.where}" if self.source else step.where) from None
                del args
                for s, array, dtype in zip(step.results, outs, step.dtypes, strict=True):
                    array = np.asarray(array)
                    _bind(env, owners, s, array if array.dtype == dtype else array.astype(dtype))
                for s in step.drops:
                    _drop(env, owners, s)
        return {name: _owned(env[s]) for name, s in zip(self.output_names, self.outputs, strict=True)}

    def _weight(self, s: int, op: WeightOp, store: object) -> np.ndarray:
        """The weight's read-only array, checked once for each array the store holds."""
        raw = op.value if op.value is not None else store[op.handle.data]  # type: ignore[index]
        seen = self._weights_seen.get(s)
        if seen is not None and seen[0] is raw:
            return seen[1]
        array = weight_array(op, store)
        self._weights_seen[s] = (raw, array)
        return array


def _signature(main: FuncOp) -> tuple:
    """What a plan depends on: every op of the body, its operands, properties and result
    types, and its kernel (identical objects: a pass that changes anything changes this)."""
    parts: list[object] = [main, *main.properties.items(), *(a.type for a in main.body.block.args)]
    kernel_of = KERNELS.get
    for op in main.body.block.ops:
        parts.append(op)
        parts.append(kernel_of(type(op)))
        parts += op.operands
        parts += op.properties.items()
        parts += (r.type for r in op.results)
    return tuple(parts)


def _plan_of(module: ModuleOp, source: str) -> _Plan:
    """The module's plan, kept on the module itself (a plan refers to the module's ops, so a
    table of plans would keep every module alive) and made again when the module changed."""
    main = main_function(module, source)
    plan: _Plan | None = getattr(module, _PLAN_ATTRIBUTE, None)
    if plan is None or plan.main is not main or plan.source != source or plan.signature != _signature(main):
        plan = _Plan(main, source)
        setattr(module, _PLAN_ATTRIBUTE, plan)
    return plan


_PLAN_ATTRIBUTE = "_reference_executor_plan"


def _residual_fusions(block: Block) -> dict[Operation, tuple[nn.Conv2dOp, nn.AddOp, Operation | None]]:
    """Residual connections to run as one step, keyed by the op where that step runs (the
    add, or the activation after it): (conv, add, activation or None). The conv's result
    must be read by the add alone and the add's other operand must have its shape. Of two
    such convs (a downsampling block) the one that can take its bias from a channel of
    ones fuses (see `_conv_fusions`: the other then needs no bias pass either), else the
    later one (its input is not kept alive longer)."""
    order = {op: i for i, op in enumerate(block.ops)}
    fusions: dict[Operation, tuple[nn.Conv2dOp, nn.AddOp, Operation | None]] = {}
    for add in block.ops:
        if not (isinstance(add, nn.AddOp) and fusable(add)) or add.operands[0] is add.operands[1]:
            continue
        candidates = [
            v.owner for v in add.operands
            if isinstance(v.owner, nn.Conv2dOp) and fusable(v.owner) and v.owner.properties.get("activation") is None
            and v.has_one_use() and v.type == add.results[0].type and add.operands[0].type == add.operands[1].type
        ]
        if not candidates:
            continue
        conv = max(candidates, key=lambda c: (_bias_channel_source(c) is not None, order[c]))
        user = add.results[0].get_user_of_unique_use()
        act = user if user is not None and activation_of(user) is not None and fusable(user) else None
        fusions[act or add] = (conv, add, act)
    return fusions


def _conv_fusions(block: Block, residuals: Mapping[Operation, tuple[nn.Conv2dOp, nn.AddOp, Operation | None]]
                  ) -> tuple[dict[Operation, ConvFusion], dict[Operation, Activation]]:
    """How each convolution joins the ops around it (`kernels.ConvFusion`): the residual
    connections above; where a conv's result is read by one conv alone, either the first
    gives its result a channel of ones for the second's bias (a 1x1 conv: its GEMM then
    adds the bias, no pass of its own even beside a residual), or the first leaves its
    activation to the second, which applies it as it copies its input (Winograd, im2col);
    and where it is read by one max pool alone, the pool applies its relu or clip to the
    pooled map (`kernels.pool_commutes`; the second result: pool op -> activation)."""
    options: dict[Operation, dict[str, object]] = {}
    pools: dict[Operation, Activation] = {}
    for conv, _, act in residuals.values():
        options[conv] = {"residual": True, "activation": None if act is None else activation_of(act)}
    for op in block.ops:
        source = _conv_read_only_by(op)
        if source is None:
            continue
        if isinstance(op, nn.PoolOp):
            kind = source.properties.get("activation")
            if kind is not None and pool_commutes(op, kind.data):  # type: ignore[attr-defined]
                options.setdefault(source, {})["defer_activation"] = True
                pools[op] = fused_activation(source)  # type: ignore[assignment]
            continue
        made, taken = options.setdefault(source, {}), options.setdefault(op, {})
        if _bias_channel_source(op) is source and not made.get("bias_in_k"):
            made["ones_channel"] = taken["bias_in_k"] = True
        elif copies_input(op) and source.properties.get("activation") is not None:
            made["defer_activation"] = True
            taken["input_activation"] = fused_activation(source)
    return {op: ConvFusion(**kwargs) for op, kwargs in options.items() if kwargs}, pools  # type: ignore[arg-type]


def _conv_read_only_by(op: Operation) -> nn.Conv2dOp | None:
    """The conv whose result `op` (a conv or pool) reads as its input, when `op` is that
    result's only reader."""
    if not (isinstance(op, (nn.Conv2dOp, nn.PoolOp)) and fusable(op)):
        return None
    source = op.operands[0].owner
    if isinstance(source, nn.Conv2dOp) and fusable(source) and op.operands[0].has_one_use():
        return source
    return None


def _bias_channel_source(op: Operation) -> nn.Conv2dOp | None:
    """The conv that can give `op` (a 1x1 conv with a bias) its input with a channel of ones."""
    source = _conv_read_only_by(op)
    if source is not None and takes_ones_channel(op) and makes_ones_channel(source):  # type: ignore[arg-type]
        return source
    return None


def _where(op: Operation) -> str:
    """How errors name an op: "layer 'conv1' (nn.conv2d)", or the op alone when unnamed."""
    name = layer_name(op)
    return f"layer '{name}' ({op.name})" if name else op.name


def _memory(array: np.ndarray) -> np.ndarray:
    """The array that owns `array`'s memory."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _bind(env: list[Any], owners: dict[int, int], s: int, array: np.ndarray) -> None:
    env[s] = array
    key = id(_memory(array))
    owners[key] = owners.get(key, 0) + 1


def _drop(env: list[Any], owners: dict[int, int], s: int) -> None:
    array = env[s]
    env[s] = None
    key = id(_memory(array))
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


def checked_inputs(
    main: FuncOp, names: list[str], inputs: Mapping[str, np.ndarray], source: str = ""
) -> list[np.ndarray]:
    """The inputs in argument order, as read-only views; every mismatch with the function's
    signature (missing, extra, wrong shape or dtype) is a LayerloomError."""
    check_input_names(names, inputs, "", source)
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
