"""The report of the prune pass: per group (layers, channels before and after, the channels
kept, the sensitivity measured), the groups skipped and why, per layer (channels, MACs and
parameters before and after, from compiler.analysis), totals, accuracy and cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from compiler.analysis import LayerInfo, analyze, is_layer
from compiler.prune.codesign import CodesignReport


@dataclass(frozen=True)
class SensitivityPoint:
    channels: int
    accuracy: float | None
    error: float


@dataclass(frozen=True)
class GroupReport:
    """A prunable group: the layers whose filters are its channels (`layers`) and those
    that follow them (depthwise convs, batchnorms, per-channel constants)."""

    layers: tuple[str, ...]
    followers: tuple[str, ...]
    channels_before: int
    channels_after: int
    criterion: str
    kept: tuple[int, ...]
    sensitivity: tuple[SensitivityPoint, ...] = ()


@dataclass(frozen=True)
class SkippedGroup:
    layers: tuple[str, ...]
    channels: int
    reason: str


@dataclass(frozen=True)
class LayerChange:
    name: str
    op: str
    channels_before: int
    channels_after: int
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int


@dataclass(frozen=True)
class PruneReport:
    criterion: str
    multiple: int | None  # None: per group, the engines' channel parallelism (co-design)
    compensate: bool
    groups: tuple[GroupReport, ...]
    skipped: tuple[SkippedGroup, ...]
    layers: tuple[LayerChange, ...]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    samples: int = 0
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    output_error: float | None = None
    target: str | None = None
    goal: float | None = None
    cost_before: float | None = None
    cost_after: float | None = None
    codesign: CodesignReport | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def cost_text(self, value: float) -> str:
        return f"{value * 1e6:.4g} us per frame" if self.target == "latency" else f"{value:,.0f}"

    def table(self) -> str:
        """The report as text: the groups (with their sensitivity when measured), a
        per-layer table, the totals and the accuracy."""
        multiples = (
            f"multiples of {self.multiple}"
            if self.multiple is not None
            else "multiples of each group's engine parallelism"
        )
        lines = [f"prune: criterion {self.criterion}, channels in {multiples}"
                 + (", biases compensated for the mean of removed channels" if self.compensate else "")]  # fmt: skip
        if self.target is not None and self.cost_before and self.cost_after is not None:
            lines.append(f"target: {self.target} at most {self.goal:g} x {self.cost_text(self.cost_before)}: "
                         f"{self.cost_text(self.cost_after)} ({self.cost_after / self.cost_before:.3f})")  # fmt: skip
        for g in self.groups:
            lines.append(f"group {', '.join(g.layers)}: {g.channels_before} -> {g.channels_after} channels"
                         + (f" (with {', '.join(g.followers)})" if g.followers else ""))  # fmt: skip
            if g.sensitivity:
                points = ", ".join(f"{p.channels}: " + (f"{p.accuracy:.2%} " if p.accuracy is not None else "")
                                   + f"{p.error:.3f}" for p in g.sensitivity)  # fmt: skip
                lines.append(f"  sensitivity (channels: {'accuracy, ' if self.accuracy_before is not None else ''}"
                             f"output error): {points}")  # fmt: skip
        lines.extend(f"skipped {', '.join(s.layers)} ({s.channels} channels): {s.reason}" for s in self.skipped)
        header = ("layer", "op", "channels", "MACs", "params")
        rows = [(x.name, x.op, f"{x.channels_before} -> {x.channels_after}", f"{x.macs_before:,} -> {x.macs_after:,}",
                 f"{x.params_before:,} -> {x.params_after:,}") for x in self.layers]  # fmt: skip
        rows.append(("total", "", "", f"{self.macs_before:,} -> {self.macs_after:,}",
                     f"{self.params_before:,} -> {self.params_after:,}"))  # fmt: skip
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])
        if self.accuracy_before is not None and self.accuracy_after is not None:
            lines.append(f"accuracy: {self.accuracy_before:.2%} -> {self.accuracy_after:.2%} on {self.samples} samples")
        if self.output_error is not None:
            lines.append(f"relative output error: {self.output_error:.4g}")
        if self.codesign is not None:
            lines.extend(self.codesign.lines())
        return "\n".join(lines) + "\n"


def channels_of(info: LayerInfo) -> int:
    return info.output_shape[1] if len(info.output_shape) >= 2 else 0


def layer_changes(before: list[LayerInfo], after: list[LayerInfo]) -> tuple[LayerChange, ...]:
    """Layers with MACs or parameters, before and after (pruning neither adds nor removes layers)."""
    return tuple(
        LayerChange(b.name, b.op, channels_of(b), channels_of(a), b.macs, a.macs, b.params, a.params)
        for b, a in zip(before, after, strict=True)
        if b.macs or b.params
    )


def layer_names(module: ModuleOp) -> dict[Operation, str]:
    """Every layer op's name as compiler.analysis gives it (the ONNX node name, or a fallback)."""
    ops = [op for op in module.walk() if is_layer(op)]
    return {op: info.name for op, info in zip(ops, analyze(module), strict=True)}
