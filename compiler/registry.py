"""Registries of dialects and passes: the built-in ones and those that installed packages
add through entry points (`layerloom.dialects`, `layerloom.passes`), so nothing in
layerloom is edited to extend it."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from functools import cache, partial
from importlib.metadata import entry_points

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.ir import Dialect
from xdsl.parser import Parser
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import ParseError, VerifyException
from xdsl.utils.mlir_lexer import MLIRTokenKind

from compiler import xdsl_fixes  # noqa: F401  (xDSL fixes for malformed text, applied on import)
from compiler.errors import LayerloomError

# name -> "module:attribute"; imported only when asked for, so start-up stays fast.
BUILTIN_DIALECTS: dict[str, str] = {
    "nn": "dialects.nn:NN",
    "qnn": "dialects.qnn:QNN",
    "accel": "dialects.accel:ACCEL",
    "dataflow": "dialects.dataflow:DATAFLOW",
    "dpu": "dialects.dpu:DPU",
}

BUILTIN_PASSES: dict[str, str] = {
    "canonicalize": "passes.canonicalize:CanonicalizePass",
    "fold-batchnorm": "passes.fold_batchnorm:FoldBatchNormPass",
    "fuse-activation": "passes.fuse_activation:FuseActivationPass",
    "prune": "passes.prune:PrunePass",
    "assign-engines": "passes.assign_engines:AssignEnginesPass",
    "tile": "passes.tile:TilePass",
    "plan-memory": "passes.plan_memory:PlanMemoryPass",
    "quantize": "passes.quantize:QuantizePass",
    "lower-to-hls": "passes.lower_to_hls:LowerToHlsPass",
    "lower-to-dpu": "passes.lower_to_dpu:LowerToDpuPass",
}


def _load(ref: str) -> object:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _plugin_refs(group: str) -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=group)}


@cache
def dialect_refs() -> dict[str, str]:
    return BUILTIN_DIALECTS | _plugin_refs("layerloom.dialects")


@cache
def pass_refs() -> dict[str, str]:
    return BUILTIN_PASSES | _plugin_refs("layerloom.passes")


def all_dialects() -> dict[str, Callable[[], Dialect]]:
    return {name: partial(_load_dialect, ref) for name, ref in dialect_refs().items()}


def all_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    return {name: partial(_load_pass, ref) for name, ref in pass_refs().items()}


def _load_dialect(ref: str) -> Dialect:
    return _as_dialect(_load(ref))


def _load_pass(ref: str) -> type[ModulePass]:
    return _as_pass(_load(ref))


def _as_dialect(obj: object) -> Dialect:
    assert isinstance(obj, Dialect), f"{obj!r} is not an xDSL Dialect"
    return obj


def _as_pass(obj: object) -> type[ModulePass]:
    assert isinstance(obj, type) and issubclass(obj, ModulePass), f"{obj!r} is not a ModulePass"
    return obj


def make_context() -> Context:
    """A context with builtin, func and every layerloom (and plugin) dialect loaded."""
    ctx = Context()
    ctx.load_dialect(Builtin)
    ctx.load_dialect(Func)
    for name, factory in all_dialects().items():
        ctx.register_dialect(name, factory)
    return ctx


# What xDSL raises, besides its ParseError and VerifyException, for malformed text: it checks
# some attributes while it builds them (a dense array of an integer width it cannot pack:
# NotImplementedError), a malformed op's verifier report can fail to print it (ValueError),
# and its parser asserts the token it expects in places (a '(' inside a dense literal).
# The text is at fault, so these are LayerloomErrors (parse_module, layerloom-opt).
XDSL_INPUT_ERRORS = (ValueError, NotImplementedError, OverflowError, AssertionError)


def xdsl_input_error(e: BaseException, where: str, text: str | None = None) -> LayerloomError:
    """One of XDSL_INPUT_ERRORS as a LayerloomError; a parser assertion names its token and,
    given the `text` parsed, its line and column."""
    lines = str(e).strip().splitlines()
    reason = lines[0] if lines else type(e).__name__
    if not isinstance(e, AssertionError):
        return LayerloomError(f"invalid attribute: {reason}", where)
    token = re.search(r"Span\[(\d+):\d+\]\('(.*)'\)\), expected MLIRTokenKind\.(\w+)", reason)
    if token is None:
        return LayerloomError(f"parse error: {reason}", where)
    offset, found, kind = int(token[1]), token[2], MLIRTokenKind.__members__.get(token[3])
    expected = f"'{kind.value}'" if kind is not None and isinstance(kind.value, str) else token[3].lower()
    if text is not None and offset <= len(text):
        line, line_start = text.count("\n", 0, offset) + 1, text.rfind("\n", 0, offset) + 1
        where = f"{where}:{line}:{offset - line_start + 1}"
    return LayerloomError(f"unexpected '{found}', expected {expected}", where)


def parse_module(text: str, where: str = "<input>") -> ModuleOp:
    """Parse MLIR text into a verified module; errors become one LayerloomError."""
    try:
        module = Parser(make_context(), text, where).parse_module()
    except ParseError as e:
        # xDSL's message is "file:line:col", the source line, a caret line, the reason.
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        location = lines[0] if lines else where
        reason = lines[-1].strip() if len(lines) > 1 else "parse error"
        raise LayerloomError(reason, location) from None
    except (VerifyException, *XDSL_INPUT_ERRORS) as e:
        raise xdsl_input_error(e, where, text) from None
    verify_module(module, where)
    return module


def verify_module(module: ModuleOp, where: str = "") -> None:
    try:
        module.verify()
    except (VerifyException, ValueError) as e:  # ValueError: see XDSL_INPUT_ERRORS
        raise LayerloomError(f"IR does not verify: {str(e).splitlines()[0]}", where) from None
