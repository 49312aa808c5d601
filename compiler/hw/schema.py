"""Declarations of the settings a block accepts (`Param`), shared by the parser's own
blocks (target, dram, memory) and by engine kinds, which declare their parameters the same
way -- so a plugin engine gets checked, normalised, located error messages for free."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from compiler.hw.units import Dimension


class ValueKind(Enum):
    QUANTITY = "a number"  # normalised by `dimension`
    WORD = "a name"
    STRING = "a quoted string"
    DIMS = "dimensions like 32 x 32"  # a tuple of positive integers


@dataclass(frozen=True)
class Param:
    """One setting: what value it takes, whether it must be there, its default."""

    doc: str
    value: ValueKind = ValueKind.QUANTITY
    dimension: Dimension = Dimension.COUNT
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()  # for words; empty = any name
    rank: int = 0  # for dims: how many factors; 0 = any
    allow_zero: bool = False  # energies may be zero; sizes, counts and clocks may not

    @property
    def expects(self) -> str:
        if self.value is ValueKind.QUANTITY:
            return self.dimension.value
        if self.value is ValueKind.WORD and self.choices:
            return "one of " + ", ".join(self.choices)
        if self.value is ValueKind.DIMS and self.rank:
            return " x ".join(["N"] * self.rank)
        return self.value.value


def count(doc: str, **kw: Any) -> Param:
    return Param(doc, ValueKind.QUANTITY, Dimension.COUNT, **kw)


def quantity(doc: str, dimension: Dimension, **kw: Any) -> Param:
    return Param(doc, ValueKind.QUANTITY, dimension, **kw)


def word(doc: str, choices: tuple[str, ...] = (), **kw: Any) -> Param:
    return Param(doc, ValueKind.WORD, choices=choices, **kw)


def string(doc: str, **kw: Any) -> Param:
    return Param(doc, ValueKind.STRING, **kw)


def dims(doc: str, rank: int = 0, **kw: Any) -> Param:
    return Param(doc, ValueKind.DIMS, rank=rank, **kw)


class ParamError(Exception):
    """Raised by an engine kind's `check` for a bad parameter value or combination; the
    parser turns it into a LayerloomError at the named parameter's line and column."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


Schema = Mapping[str, Param]
