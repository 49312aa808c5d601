"""`prune`: layer-wise structured pruning of output channels of `nn.conv2d` (dense) and
`nn.gemm` (output features), keeping the graph consistent (docs/pruning.md).

    prune{ratio=0.3 multiple=8}                                  uniform
    prune{ratios="conv1:0.5,conv2:0.25" criterion=l2}            per layer (quotes: the ':')
    prune{target=flops goal=0.5 calib="val.npz" multiple=8}      sensitivity search
    prune{target=latency goal=0.7 hw=zcu102 arch=hybrid budget=1024 report="-"}
                                                                 co-design (the mapping decides)

1. `compiler.prune.groups` finds the channel groups: tensors tied through residual adds,
   depthwise convs, batchnorms, pass-through ops, concats and flattens share one keep-set;
   groups that reach a graph output or an op prune cannot follow are skipped, with why.
2. Each prunable group keeps a number of channels: from its layer's ratio in `ratios`,
   the uniform `ratio`, or a search that meets `goal` x the original cost (`target`:
   MACs, parameters or latency), rounded to a multiple of `multiple` (never to zero).
3. The channels kept are the most important by `criterion`: L1 or L2 norm of each filter
   (summed over a group's convs/gemms), or |gamma| of the group's batchnorms (run prune
   before fold-batchnorm for that).
4. Weights are sliced into new arrays (filters and biases of the sources, the same
   channels of depthwise filters, batchnorm parameters and per-channel constants, the
   input-channel slice of every consumer, rows of the final FC after a flatten) and the
   tensor types shrink. With `compensate=true` each consumer's bias also takes what its
   removed input channels contributed on average over the data.

Data (`calib=FILE.npz`: inputs by name, optional `labels`) drives the sensitivity search,
the compensation and the accuracy in the report; without it a target is met by a uniform
ratio (target=latency: the co-design loop of compiler.prune.codesign, with the mapping on
`hw` in the loop and channels rounded to the engines' parallelism).

From Python: `prune(program, data=None, labels=None, **options) -> (Program, PruneReport)`
(a new program; the argument is left as it was). The pass logs the report on the
`layerloom.prune` logger and writes it to `report=FILE` (`-`: stderr) when asked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import FloatAttr, ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from backends.reference.executor import execute
from compiler.analysis import analyze, totals
from compiler.errors import LayerloomError
from compiler.program import Program, weights_of
from compiler.prune import search
from compiler.prune.codesign import Codesign, Multiple, Step, greedy, mass_loss
from compiler.prune.groups import CRITERIA, ChannelGraph, Group, WeightSlice
from compiler.prune.report import GroupReport, PruneReport, SensitivityPoint, SkippedGroup, layer_changes, layer_names
from compiler.prune.search import Counts, Evaluator, Loss, Score
from compiler.quant import calibrate
from compiler.tensors import tensor_type
from dialects import nn
from dialects.nn import i64attr
from passes.utils import new_weight, weight_op_of, write_report

WHERE = "prune"
BIAS = 2  # operand index of a conv's bias and a gemm's C
logger = logging.getLogger("layerloom.prune")


@dataclass(frozen=True)
class Options:
    criterion: str = "l1"
    ratio: float = 0.0
    ratios: Mapping[str, float] = field(default_factory=dict)
    multiple: int | None = None  # None: 1, or the engines' channel parallelism for target=latency
    target: str | None = None
    goal: float | None = None
    max_ratio: float = 0.9
    steps: int = 9
    exclude: frozenset[str] = frozenset()
    hw: str | None = None
    arch: str = "hybrid"
    budget: int | None = None
    compensate: bool = False

    def check(self) -> None:
        if self.criterion not in CRITERIA:
            raise LayerloomError(f"unknown criterion '{self.criterion}' (one of {', '.join(CRITERIA)})", WHERE)
        for name, r in [("ratio", self.ratio), *((f"ratio of '{k}'", v) for k, v in self.ratios.items())]:
            if not 0.0 <= r < 1.0:
                raise LayerloomError(f"{name} {r} must lie in [0, 1): the fraction of channels to remove", WHERE)
        if self.multiple is not None and self.multiple < 1:
            raise LayerloomError(f"multiple {self.multiple} must be a positive integer", WHERE)
        if not 0.0 < self.max_ratio < 1.0 or self.steps < 1:
            raise LayerloomError(f"max-ratio {self.max_ratio} must lie in (0, 1) and steps {self.steps} be >= 1", WHERE)
        if self.target is None:
            if self.goal is not None:
                raise LayerloomError("goal needs a target (target=flops|params|latency)", WHERE)
            return
        if self.target not in search.TARGETS:
            raise LayerloomError(f"unknown target '{self.target}' (one of {', '.join(search.TARGETS)})", WHERE)
        if self.goal is None or not 0 < self.goal <= 1:
            raise LayerloomError(f"target={self.target} needs goal in (0, 1]: the fraction of the original "
                                 f"{self.target} to keep", WHERE)  # fmt: skip
        if self.ratio:
            raise LayerloomError("ratio and target exclude each other (ratios= can pin named layers)", WHERE)


def parse_ratios(ratios: Mapping[str, float] | Sequence[str] | str | None) -> dict[str, float]:
    """`{"conv1": 0.5}`, or entries "NAME:RATIO" (several per string, comma separated)."""
    if ratios is None:
        return {}
    if isinstance(ratios, Mapping):
        return {str(k): float(v) for k, v in ratios.items()}
    entries = [e.strip() for item in ([ratios] if isinstance(ratios, str) else ratios) for e in item.split(",")]
    out: dict[str, float] = {}
    for entry in filter(None, entries):
        name, sep, value = entry.rpartition(":")
        try:
            if not (sep and name):
                raise ValueError
            out[name] = float(value)
        except ValueError:
            raise LayerloomError(f"ratios entry '{entry}' must be NAME:RATIO", WHERE) from None
    return out


# ---------------------------------------------------------------------------------------
# Applying kept counts
# ---------------------------------------------------------------------------------------


def select(graph: ChannelGraph, counts: Counts, criterion: str) -> dict[int, tuple[np.ndarray, str]]:
    """The channels each group keeps (its `counts` most important, in order) and the
    criterion used, for the groups that lose channels."""
    keeps: dict[int, tuple[np.ndarray, str]] = {}
    for g in graph.groups:
        k = counts.get(g.index, g.channels)
        if g.prunable and k < g.channels:
            scores, used = graph.scores(g, criterion)
            keeps[g.index] = (np.sort(np.argsort(-scores, kind="stable")[:k]), used)
    return keeps


def rewrite(program: Program, graph: ChannelGraph, keeps: Mapping[int, np.ndarray],
            means: Mapping[int, np.ndarray] | None = None) -> None:  # fmt: skip
    """Slice the weights and shrink the tensor types of `program` for the kept channels.
    With `means` (per consumer position: the mean of each channel it reads), consumers
    add what their removed input channels contributed on average to their bias."""
    maps = graph.index_maps(keeps)
    block = program.main.body.block
    position = {op: i for i, op in enumerate(block.ops)}

    def map_of(value: SSAValue) -> np.ndarray | None:
        g = graph.group_of(value)
        return None if g is None else maps[g.index]

    replaced: list[nn.WeightOp] = []
    for op, slices in graph.slices.items():
        arrays: dict[int, np.ndarray] = {}
        reads = next((s.by for s in slices if s.by is not op.results[0]), None)  # a consumer's input
        if means is not None and reads is not None and (kept := map_of(reads)) is not None:
            removed = np.setdiff1d(np.arange(nn.shape_of(reads)[1]), kept)
            arrays[BIAS] = bias = graph.compensated_bias(op, removed, means[position[op]])
            outputs = nn.shape_of(op.results[0])[1]
            slices = [s for s in slices if s.operand != BIAS]
            if bias.ndim and bias.shape[-1] == outputs > 1:
                slices.append(WeightSlice(BIAS, bias.ndim - 1, op.results[0]))
            if isinstance(op, nn.GemmOp) and (op.c is None or op.beta.value.data == 0.0):
                op.properties["beta"] = FloatAttr(1.0, op.beta.type)
        for s in slices:
            if (m := map_of(s.by)) is not None:
                array = arrays[s.operand] if s.operand in arrays else graph.weight(op.operands[s.operand])
                assert array is not None
                arrays[s.operand] = np.take(array, m, axis=s.axis)
        operands = list(op.operands)
        for index, array in sorted(arrays.items()):
            old = weight_op_of(operands[index]) if index < len(operands) else None
            name = getattr(op, "layer_name", "") or "layer"
            hint = f"{old.handle.data}.pruned" if old is not None else f"{name}.bias"
            new = new_weight(program.weights, array, hint, old.node_name if old is not None else None)
            block.insert_op_before(new, old if old is not None else op)
            if old is not None:
                new.result.name_hint = operands[index].name_hint
                operands[index] = new.result
                replaced.append(old)
            else:
                operands.append(new.result)
        if arrays:
            op.operands = operands
        if isinstance(op, nn.Conv2dOp) and op.group.value.data > 1 and (m := map_of(op.result)) is not None:
            op.properties["group"] = i64attr(len(m))
    for g in graph.groups:
        channels = maps[g.index]
        if channels is None:
            continue
        for value in g.values:
            shape = list(nn.shape_of(value))
            shape[1] = len(channels)
            Rewriter.replace_value_with_new_type(value, tensor_type(shape, nn.element_type_of(value)))
    for stale in replaced:
        if stale.parent is not None and not stale.result.uses:
            block.erase_op(stale)


def consumer_means(program: Program, graph: ChannelGraph, batches: list[calibrate.Batch]) -> dict[int, np.ndarray]:
    """For every consumer (dense conv, gemm) by its position in the function: the mean over
    the data of each channel (axis 1) of the tensor it reads."""
    block = program.main.body.block
    position = {op: i for i, op in enumerate(block.ops)}
    reads = {position[op]: s.by for op, slices in graph.slices.items() for s in slices if s.by is not op.results[0]}
    values = list(dict.fromkeys(reads.values()))
    probe = calibrate.probe_program(program.module, program.weights, values)
    sums = [np.zeros(nn.shape_of(v)[1]) for v in values]
    for batch in batches:
        for total, x in zip(sums, execute(probe, batch).values(), strict=True):
            total += np.asarray(x, np.float64).mean(axis=tuple(i for i in range(x.ndim) if i != 1))
    mean_of = {v: total / len(batches) for v, total in zip(values, sums, strict=True)}
    return {p: mean_of[v] for p, v in reads.items()}


def channel_graph(program: Program) -> ChannelGraph:
    from backends.reference.executor import main_function

    return ChannelGraph(main_function(program.module, program.source).body.block, program.weights, program.input_names)


def pruned_copy(program: Program, counts: Counts, criterion: str, means: Mapping[int, np.ndarray] | None) -> Program:
    """A copy of `program` with each group cut to its count in `counts`."""
    copy = program.clone()
    graph = channel_graph(copy)
    rewrite(copy, graph, {g: keep for g, (keep, _) in select(graph, counts, criterion).items()}, means)
    return copy


# ---------------------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------------------


class Planner:
    """Decides the kept counts of every prunable group of `program` for `options`."""

    def __init__(self, program: Program, options: Options, evaluator: Evaluator | None) -> None:
        self.program, self.options, self.evaluator = program, options, evaluator
        self.graph = channel_graph(program)
        self.means = None
        if evaluator is not None and options.compensate:
            self.means = consumer_means(program, self.graph, evaluator.batches)
        self.names = layer_names(program.module)
        self.sensitivity: dict[int, dict[int, Score]] = {}
        self.cost_before: float | None = None
        self.cost_after: float | None = None
        self.codesign: Codesign | None = None
        self.steps: list[Step] = []
        if options.target == "latency":
            if not options.hw:
                raise LayerloomError("target=latency needs the hardware: hw=NAME or a .hw path", WHERE)
            from compiler.hw import load_target

            self.codesign = Codesign(program, load_target(options.hw), options.hw, options.arch, options.budget, WHERE)
        self.multiples = {g.index: self.multiple_of(g) for g in self.graph.groups if g.prunable}
        self.owner: dict[str, Group] = {}
        for g in self.graph.groups:
            for op in (*g.sources, *g.followers):
                self.owner.setdefault(self.names[op], g)
        for name in sorted(options.exclude):
            self.named(name, "exclude").reason = f"excluded (exclude={name})"

    def pruned(self, counts: Counts) -> Program:
        return pruned_copy(self.program, counts, self.options.criterion, self.means)

    def multiple_of(self, g: Group) -> int:
        """The multiple a group's kept channels are rounded to: `multiple`, else the
        channel parallelism of its engines for target=latency, else 1."""
        if self.options.multiple is not None:
            return self.options.multiple
        return self.codesign.multiple(g, self.names)[0] if self.codesign is not None else 1

    def named(self, name: str, option: str) -> Group:
        """The prunable group whose channels the layer `name` defines."""
        g = self.owner.get(name)
        if g is None:
            known = sorted(self.names[op] for g in self.graph.groups for op in g.sources if g.prunable)
            listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            raise LayerloomError(f"{option} names '{name}', which is no conv2d or gemm of the program "
                                 f"(prunable: {listed or 'none'})", WHERE)  # fmt: skip
        if not any(self.names[op] == name for op in g.sources):
            defining = ", ".join(self.names[op] for op in g.sources) or "no layer"
            raise LayerloomError(f"{option} names '{name}', whose channels follow its input: they are "
                                 f"defined by {defining}", WHERE)  # fmt: skip
        if g.reason is not None and not g.reason.startswith("excluded"):
            raise LayerloomError(f"{option} names '{name}', which cannot be pruned: its output {g.reason}", WHERE)
        return g

    def counts(self) -> Counts:
        o = self.options
        pinned: dict[int, float] = {}
        for name, r in o.ratios.items():
            g = self.named(name, "ratios")
            if g.reason is not None:
                raise LayerloomError(f"ratios names '{name}', which exclude names too", WHERE)
            if pinned.get(g.index, r) != r:
                raise LayerloomError(f"ratios gives '{name}' {r}, another layer of its group "
                                     f"{pinned[g.index]}: tied channels share one ratio", WHERE)  # fmt: skip
            pinned[g.index] = r
        prunable = [g for g in self.graph.groups if g.prunable]
        uniform = 0.0 if o.target else o.ratio
        start = {g.index: search.kept_channels(g.channels, pinned.get(g.index, uniform), self.multiples[g.index])
                 for g in prunable}  # fmt: skip
        if o.target is None:
            return start
        free = {g.index: g.channels for g in prunable if g.index not in pinned}
        return self.codesign_search(start, free) if self.codesign is not None else self.search(start, free)

    def measure_sensitivity(self, start: Counts, candidates: Mapping[int, Sequence[int]]) -> dict[int, dict[int, Loss]]:
        """Each free group's loss alone at each candidate count (needs data)."""
        evaluator = self.evaluator
        assert evaluator is not None
        self.sensitivity = search.sensitivity(candidates, candidates, start, lambda c: evaluator.score(self.pruned(c)))
        return {g: {k: evaluator.loss(s) for k, s in per.items()} for g, per in self.sensitivity.items()}

    def codesign_search(self, start: Counts, free: Mapping[int, int]) -> Counts:
        """target=latency: the greedy search of compiler.prune.codesign, with the mapping
        of every candidate measured by assign-engines."""
        o, design = self.options, self.codesign
        assert design is not None and o.goal is not None
        candidates = {g: search.candidate_counts(c, self.multiples[g], o.max_ratio, o.steps) for g, c in free.items()}
        if self.evaluator is not None:
            losses = self.measure_sensitivity(start, candidates)
            scalar = {g: {k: drop + error for k, (drop, error) in per.items()} for g, per in losses.items()}
        else:
            group = {g.index: g for g in self.graph.groups}
            scalar = {g: mass_loss(self.graph.scores(group[g], o.criterion)[0]) for g in free}

        def sensitivity(g: int, k: int) -> float:
            return 0.0 if k == free[g] else scalar[g][k]

        def measure(counts: Counts) -> tuple[float, float]:
            m = design.map(pruned_copy(self.program, counts, o.criterion, None), owned=True)
            return m.period_s, m.latency_s

        cost = search.memoised(measure)
        self.cost_before = design.before.period_s
        limit = o.goal * self.cost_before
        counts, steps = greedy(start, candidates, sensitivity, cost, limit)
        group_names = {g.index: tuple(self.names[op] for op in g.sources) for g in self.graph.groups}
        self.steps = [Step(group_names[g], k0, k1, p0, p1, loss) for g, k0, k1, p0, p1, loss in steps]
        self.cost_after = cost(counts)[0]
        if self.cost_after > limit:
            raise LayerloomError(f"goal {o.goal:g} of the latency is out of reach on {o.hw} ({o.arch}): the co-design "
                                 f"search stops at {self.cost_after / self.cost_before:.3f} of the period, "
                                 f"{len(steps)} steps, bottleneck {design.map(self.pruned(counts)).bottleneck} "
                                 f"(max-ratio {o.max_ratio:g} bounds every group)", WHERE)  # fmt: skip
        return counts

    def search(self, start: Counts, free: Mapping[int, int]) -> Counts:
        """The least pruning of the `free` groups that meets the target (module doc of
        compiler.prune.search)."""
        o = self.options
        assert o.target is not None and o.goal is not None
        measure = search.cost_function(o.target, WHERE)
        cost = search.memoised(lambda counts: measure(self.pruned(counts)))
        self.cost_before = measure(self.program)
        limit = o.goal * self.cost_before
        multiple = o.multiple or 1
        if self.evaluator is not None:
            candidates = {g: search.candidate_counts(c, multiple, o.max_ratio, o.steps) for g, c in free.items()}
            configs = search.threshold_configs(start, candidates, self.measure_sensitivity(start, candidates))
        else:
            configs = [c for _, c in search.uniform_configs(start, free, multiple, o.max_ratio)]
        found = search.first_meeting(configs, cost, limit)
        if found is None:
            reached = cost(configs[-1]) / self.cost_before if self.cost_before else 1.0
            raise LayerloomError(f"goal {o.goal:g} of the {o.target} is out of reach: pruning every prunable group "
                                 f"as far as max-ratio {o.max_ratio:g} allows keeps {reached:.3f} of it", WHERE)  # fmt: skip
        self.cost_after = cost(configs[found])
        return configs[found]

    def report_groups(
        self, keeps: Mapping[int, tuple[np.ndarray, str]], counts: Counts
    ) -> tuple[tuple[GroupReport, ...], tuple[SkippedGroup, ...]]:
        groups, skipped = [], []
        for g in self.graph.groups:
            sources = tuple(self.names[op] for op in g.sources)
            if g.prunable:
                kept, used = keeps.get(g.index, (np.arange(g.channels), self.options.criterion))
                measured = self.sensitivity.get(g.index, {})
                points = tuple(SensitivityPoint(k, s.accuracy, s.error) for k, s in measured.items())
                followers = tuple(self.names[op] for op in g.followers)
                after = counts.get(g.index, g.channels)
                groups.append(GroupReport(sources, followers, g.channels, after, used, tuple(map(int, kept)), points))
            elif sources:
                skipped.append(
                    SkippedGroup(sources, g.channels, g.reason or "its channels are built from other groups")
                )
        return tuple(groups), tuple(skipped)


def prune_program(program: Program, options: Options, data: object = None, labels: object = None) -> PruneReport:
    """Prune `program` in place (module and weights) and return the report. `data`: see
    `compiler.prune.search.as_batches`; `labels`: one class per sample, in sample order."""
    options.check()
    if labels is not None and data is None:
        raise LayerloomError("labels need data (the inputs they label)", WHERE)
    if options.compensate and data is None:
        raise LayerloomError("compensate needs data to measure channel means (calib=FILE.npz; data= in Python)", WHERE)
    evaluator = None
    if data is not None:
        evaluator = Evaluator(program, search.as_batches(program, data, WHERE), labels, WHERE)
    before = analyze(program)
    planner = Planner(program, options, evaluator)
    counts = planner.counts()
    keeps = select(planner.graph, counts, options.criterion)
    groups, skipped = planner.report_groups(keeps, counts)
    rewrite(program, planner.graph, {g: keep for g, (keep, _) in keeps.items()}, planner.means)
    after = analyze(program)
    codesign = None
    if planner.codesign is not None:
        design = planner.codesign
        multiples = [Multiple(tuple(planner.names[op] for op in g.sources), planner.multiples[g.index],
                              design.multiple(g, planner.names)[1]) for g in planner.graph.groups if g.prunable]  # fmt: skip
        codesign = design.report(design.map(program), multiples, planner.steps)
    score = evaluator.score(program) if evaluator is not None else None
    t0, t1 = totals(before), totals(after)
    return PruneReport(
        criterion=options.criterion, compensate=options.compensate,
        multiple=options.multiple if options.multiple is not None else None if codesign else 1,
        codesign=codesign,
        groups=groups, skipped=skipped, layers=layer_changes(before, after),
        macs_before=t0.macs, macs_after=t1.macs, params_before=t0.params, params_after=t1.params,
        samples=0 if evaluator is None else sum(len(out[0]) for out in evaluator.reference),
        accuracy_before=None if evaluator is None else evaluator.baseline.accuracy,
        accuracy_after=None if score is None else score.accuracy,
        output_error=None if score is None else score.error,
        target=options.target, goal=options.goal, cost_before=planner.cost_before, cost_after=planner.cost_after,
    )  # fmt: skip


def options_of(
    criterion: str = "l1", ratio: float = 0.0, ratios: Mapping[str, float] | Sequence[str] | str | None = None,
    multiple: int | None = None, target: str | None = None, goal: float | None = None, max_ratio: float = 0.9,
    steps: int = 9, exclude: Sequence[str] | str = (), hw: str | None = None, arch: str = "hybrid",
    budget: int | None = None, compensate: bool = False,
) -> Options:  # fmt: skip
    names = exclude.split(",") if isinstance(exclude, str) else list(exclude)
    return Options(criterion, float(ratio), parse_ratios(ratios), None if multiple is None else int(multiple), target,
                   None if goal is None else float(goal), float(max_ratio), int(steps),
                   frozenset(n for n in names if n), hw, arch, budget, bool(compensate))  # fmt: skip


def prune(
    program: Program, data: object = None, labels: object = None, **options: object
) -> tuple[Program, PruneReport]:
    """The pruned version of `program` (a new Program; `program` is not changed) and the
    report. `data`: an array (one-input programs), {input name: array} or an iterable of
    such batches, samples along axis 0; `labels`: one class per sample. Options as the
    pass's, with `ratios` also a {layer name: ratio} dict."""
    try:
        opts = options_of(**options)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise LayerloomError(f"bad option: {str(e).replace('options_of()', 'prune()')}", WHERE) from None
    result = program.clone()
    report = prune_program(result, opts, data, labels)
    return result, report


@dataclass(frozen=True)
class PrunePass(ModulePass):
    """Structured output-channel pruning; `calib` is an .npz of inputs (keyed by input
    name) with an optional `labels` array, for the sensitivity search and the accuracy;
    `report=FILE` writes the report (`-`: stderr)."""

    name = "prune"

    criterion: str = "l1"
    ratio: float | int = 0.0
    ratios: tuple[str, ...] = ()
    multiple: int | None = None
    target: str | None = None
    goal: float | int | None = None
    max_ratio: float | int = 0.9
    steps: int = 9
    exclude: tuple[str, ...] = ()
    calib: str | None = None
    hw: str | None = None
    arch: str = "hybrid"
    budget: int | None = None
    compensate: bool = False
    report: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        program = Program(op, weights_of(op))
        data = labels = None
        if self.calib:
            data, labels = search.load_data(self.calib, program.input_names)
        options = options_of(self.criterion, self.ratio, self.ratios, self.multiple, self.target, self.goal,
                             self.max_ratio, self.steps, self.exclude, self.hw, self.arch, self.budget,
                             self.compensate)  # fmt: skip
        report = prune_program(program, options, data, labels)
        logger.info("%s", report.table())
        if self.report:
            write_report(report.table(), self.report)


__all__ = ["Options", "PrunePass", "PruneReport", "prune", "prune_program"]
