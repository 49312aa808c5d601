"""Units of the hardware-description language and their normalisation to SI base units.

Conventions (the ones datasheets use): memory *sizes* are binary (1 Kb = 1024 bits, so a
"36 Kb" BRAM holds 4608 bytes; 1 KB = 1024 bytes), *bandwidths* are decimal (1 GB/s =
1e9 bytes/s, so DDR4-2400 on a 64-bit bus is 19.2 GB/s). A lower-case b is a bit, an
upper-case B a byte.
"""

from __future__ import annotations

from enum import Enum


class Dimension(Enum):
    """What a setting measures; each has a base unit that values are normalised to."""

    COUNT = "a plain number"
    FREQUENCY = "a frequency"  # Hz
    SIZE = "a size"  # bytes
    BANDWIDTH = "a bandwidth"  # bytes/s
    ENERGY = "an energy"  # J
    ENERGY_PER_BYTE = "an energy per byte"  # J/byte


def _scaled(base: dict[str, float], prefixes: dict[str, float]) -> dict[str, float]:
    return {p + u: f * s for u, f in base.items() for p, s in prefixes.items()}


_DECIMAL = {"": 1.0, "K": 1e3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BINARY = {"": 1.0, "K": 1024.0, "k": 1024.0, "M": 1024.0**2, "G": 1024.0**3, "T": 1024.0**4}
_BINARY_IEC = {"Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3, "Ti": 1024.0**4}
_SMALL = {"f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0}

UNITS: dict[Dimension, dict[str, float]] = {
    Dimension.FREQUENCY: {"Hz": 1.0, "kHz": 1e3, "KHz": 1e3, "MHz": 1e6, "GHz": 1e9},
    Dimension.SIZE: _scaled({"B": 1.0, "b": 0.125}, _BINARY) | _scaled({"B": 1.0, "b": 0.125}, _BINARY_IEC),
    Dimension.BANDWIDTH: _scaled({"B/s": 1.0, "b/s": 0.125}, _DECIMAL) | _scaled({"B/s": 1.0, "b/s": 0.125}, _BINARY_IEC),
    Dimension.ENERGY: _scaled({"J": 1.0}, _SMALL),
    Dimension.ENERGY_PER_BYTE: _scaled({"J/B": 1.0, "J/b": 8.0}, _SMALL),
}

_DIMENSION_OF_UNIT: dict[str, Dimension] = {u: d for d, table in UNITS.items() for u in table}


def dimension_of(unit: str) -> Dimension | None:
    return _DIMENSION_OF_UNIT.get(unit)


def factor(unit: str, dimension: Dimension) -> float | None:
    """How many base units one `unit` is, or None when `unit` does not measure `dimension`."""
    return UNITS.get(dimension, {}).get(unit)


def examples(dimension: Dimension) -> str:
    """A short list of accepted units for error messages."""
    samples = {
        Dimension.FREQUENCY: "Hz, MHz, GHz",
        Dimension.SIZE: "B, KB, MB, b, Kb, Mb",
        Dimension.BANDWIDTH: "B/s, MB/s, GB/s, Gb/s",
        Dimension.ENERGY: "fJ, pJ, nJ",
        Dimension.ENERGY_PER_BYTE: "pJ/B, pJ/b, nJ/B",
        Dimension.COUNT: "no unit",
    }
    return samples[dimension]
