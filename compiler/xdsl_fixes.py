"""Two fixes to the pinned xDSL (0.74.0) for malformed input, applied once on import (by
compiler.registry, through which every parse goes). Both keep xDSL's behaviour on valid
text and only bound its time on bad text; tests/test_opt.py holds them.

- Its lexer matches a string literal with `"(?:[^"...]+|\\...)*"`: nested quantifiers, so a
  string left open (or holding an escape MLIR does not have) backtracks exponentially in the
  length of its line: `dense<0x1234...">` with its opening quote lost took minutes. The same
  pattern with possessive quantifiers matches the same strings, in linear time.
- An integer type's width is unbounded, and an attribute `1 : i2147483648` computes its
  value range as 2**2147483648 (seconds per attribute; wider, minutes). MLIR caps widths at
  2**24 - 1 bits (IntegerType::kMaxWidth); xDSL now refuses wider types as MLIR does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from xdsl.dialects.builtin import IntegerType
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.mlir_lexer import MLIRLexer

MAX_INTEGER_WIDTH = (1 << 24) - 1

MLIRLexer._unescaped_characters_regex = re.compile(  # pyright: ignore[reportPrivateUsage]
    r'"(?:[^"\\\n\v\f]++|\\(?:["nt\\]|[0-9A-Fa-f]{2}))*+"'
)

_verify_integer_type: Callable[[Any], None] = IntegerType.verify


def _verify_bounded_integer_type(self: IntegerType) -> None:
    _verify_integer_type(self)
    if self.width.data > MAX_INTEGER_WIDTH:
        raise VerifyException(f"integer type bitwidth {self.width.data} is above MLIR's limit of {MAX_INTEGER_WIDTH}")


IntegerType.verify = _verify_bounded_integer_type  # type: ignore[method-assign]
