"""`assign-engines{arch=seml|sesl|hybrid budget=N hw=NAME}`: put every layer on an engine.

- `seml`: one reused engine with the whole budget runs every layer in turn;
- `sesl`: one engine per layer, a pipeline whose PEs are split so that the stages are
  balanced (a stage's time is its cycles under the cost model);
- `hybrid`: the first k layers on a balanced pipeline, the rest on a reused engine; k and
  the PE split are searched so that the slower part is as fast as possible.

The search (compiler/mapping.py) also picks tiles and a memory plan, because a layer's
cycles depend on them; the `tile` and `plan-memory` passes recompute the same choices and
write them into the IR. Here the module gets one `accel.engine` per engine instance and
each layer is wrapped in an `accel.layer` with its engine, PEs and schedule slot. Layers
no engine of the architecture runs stay as they are (on the host). `budget=0` means the
target's `pe_budget`; `hw` is a bundled target name or a .hw file and is recorded on the
module (`accel.target`) for the passes that follow.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from compiler.errors import LayerloomError
from compiler.mapping import ARCH_ATTR, BUDGET_ATTR, TARGET_ATTR, LayerGraph, NetworkMapping, assign, target_of
from dialects.accel import EngineOp, LayerOp, attrs_of
from dialects.nn import WeightOp, i64attr


@dataclass(frozen=True)
class AssignEnginesPass(ModulePass):
    name = "assign-engines"

    arch: str = "hybrid"
    budget: int = 0
    hw: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if any(isinstance(o, LayerOp) for o in op.walk()):
            raise LayerloomError("the module is already mapped (assign-engines ran before)", "assign-engines")
        target, ref = target_of(op, self.hw, self.name)
        graph, layer_ops = LayerGraph.of_module(op)
        mapping = assign(graph, target, self.arch, self.budget or None)
        write_engines(op, mapping)
        for layer_op, mapped in zip(layer_ops, mapping.layers, strict=True):
            if mapped.cost is not None:
                Rewriter.replace_op(layer_op, LayerOp.wrap(layer_op, mapped.engine, mapped.pes, mapped.slot))
        for weight in [o for o in op.walk() if isinstance(o, WeightOp) and not o.result.uses]:
            if not isinstance(weight.parent_op(), LayerOp):
                Rewriter.erase_op(weight)
        op.attributes[TARGET_ATTR] = StringAttr(ref)
        op.attributes[ARCH_ATTR] = StringAttr(self.arch)
        op.attributes[BUDGET_ATTR] = i64attr(mapping.assignment.budget)


def write_engines(module: ModuleOp, mapping: NetworkMapping) -> None:
    """One accel.engine per engine instance, at the top of the module, in stage order."""
    block = module.body.block
    anchor = block.first_op
    for e in sorted(mapping.engines, key=lambda e: e.stage):
        properties = {
            "sym_name": StringAttr(e.name),
            "kind": StringAttr(e.engine.kind),
            "role": StringAttr(e.role),
            "pes": i64attr(e.pes),
            "stage": i64attr(e.stage),
            "target_engine": StringAttr(e.engine.name),
        }
        if e.engine.count > 1:
            properties["count"] = i64attr(e.engine.count)
        params = {k: v for k, v in e.engine.params.items() if v is not None and k != "pes"}
        if params:
            properties["params"] = attrs_of(params)
        engine = EngineOp.build(properties=properties)
        if anchor is None:
            block.add_op(engine)
        else:
            block.insert_op_before(engine, anchor)
