"""What a parsed hardware description is: a Target with its DRAM, on-chip memories and
engines. Every quantity is normalised to SI base units (Hz, bytes, bytes/s, joules), so
passes and the cost model never see a unit again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from compiler.errors import LayerloomError

if TYPE_CHECKING:
    from compiler.engines.base import EngineKind


@dataclass(frozen=True)
class Dram:
    """Off-chip memory: peak bandwidth (bytes/s) and access energy (J/byte)."""

    bandwidth: float
    energy_per_byte: float
    size: int | None = None


@dataclass(frozen=True)
class Memory:
    """One kind of on-chip memory (BRAM, URAM, an SRAM scratchpad): total bytes, banks,
    ports per bank and access energy (J/byte)."""

    name: str
    size: int
    banks: int = 1
    ports: int = 2
    energy_per_byte: float = 0.0
    where: str = ""

    @property
    def bank_size(self) -> int:
        return self.size // self.banks


@dataclass(frozen=True)
class Engine:
    """An engine instance of a target: its kind (a plugin from `layerloom.engines`) and its
    parameters, already checked against the kind's parameter list and normalised."""

    name: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    count: int = 1
    clock: float | None = None  # Hz; None = the target's clock
    buffer: str | None = None  # the on-chip memory its tiles live in; None = the target's first
    where: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def kind_plugin(self) -> EngineKind:
        from compiler.engines import engine_kind

        return engine_kind(self.kind, self.where)

    @property
    def fixed_pes(self) -> int | None:
        """MAC units per instance when the hardware fixes them (a DPU core, a systolic
        array); None when PEs are a design choice made within the budget (SEML, SESL)."""
        return self.kind_plugin.fixed_pes(self)

    @property
    def pes(self) -> int | None:
        """The engine's MAC units per instance: fixed, or as given by its `pes` setting."""
        fixed = self.fixed_pes
        return fixed if fixed is not None else self.params.get("pes")


@dataclass(frozen=True)
class Target:
    """A hardware target: clock, PE budget, DRAM, on-chip memories and engines."""

    name: str
    clock: float  # Hz
    pe_budget: int  # MAC units available to all engines together
    dram: Dram
    memories: tuple[Memory, ...] = ()
    engines: tuple[Engine, ...] = ()
    mac_energy: float = 0.0  # J per multiply-accumulate
    part: str = ""
    source: str = ""  # the file it was read from (or <string>)

    def engine(self, name: str) -> Engine:
        for e in self.engines:
            if e.name == name:
                return e
        known = ", ".join(e.name for e in self.engines) or "none"
        raise LayerloomError(f"target '{self.name}' has no engine '{name}' (engines: {known})", self.source)

    def memory(self, name: str) -> Memory:
        for m in self.memories:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.memories) or "none"
        raise LayerloomError(f"target '{self.name}' has no memory '{name}' (memories: {known})", self.source)

    def buffer_of(self, engine: Engine) -> Memory | None:
        """The on-chip memory an engine keeps its tiles in."""
        if engine.buffer is not None:
            return self.memory(engine.buffer)
        return self.memories[0] if self.memories else None

    def clock_of(self, engine: Engine) -> float:
        return engine.clock if engine.clock is not None else self.clock

    @property
    def onchip_bytes(self) -> int:
        return sum(m.size for m in self.memories)

    @property
    def peak_ops_per_second(self) -> float:
        """2 ops (multiply + add) per MAC unit per cycle over the whole PE budget."""
        return 2.0 * self.pe_budget * self.clock

    @property
    def ridge_point(self) -> float:
        """Ops per DRAM byte at which the roofline turns from memory- to compute-bound."""
        return self.peak_ops_per_second / self.dram.bandwidth
