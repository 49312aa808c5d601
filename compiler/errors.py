"""One error class for everything a user can get wrong (bad model, bad pipeline, bad input).

The CLI prints `layerloom: error: <where>: <message>` and exits with code 2; library users
catch `LayerloomError`. Internal bugs stay ordinary exceptions with tracebacks.
"""

from __future__ import annotations


class LayerloomError(Exception):
    """A problem with the user's input, named with where it is (file, node, line)."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class UnsupportedError(LayerloomError):
    """The input is valid but uses something layerloom does not implement."""


class ModelError(LayerloomError):
    """The model file itself is malformed (unreadable, cyclic, inconsistent)."""


class OutOfRangeError(LayerloomError, ValueError):
    """An integer program's values leave the range its spec gives them (an accumulator
    beyond int32): its parameters make it impossible, it is not a bug of layerloom."""
