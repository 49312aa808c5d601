"""Running pass pipelines written as text, the same syntax as `layerloom-opt -p`."""

from __future__ import annotations

from dataclasses import fields

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.utils.arg_spec import parse_pipeline as xdsl_parse_pipeline
from xdsl.utils.exceptions import VerifyException

from compiler.errors import LayerloomError
from compiler.program import Program
from compiler.registry import all_passes, make_context


def parse_pipeline(text: str) -> PassPipeline:
    """Parse `pass-a,pass-b{opt=1}`; unknown passes, options or syntax raise LayerloomError."""
    available = all_passes()
    try:
        specs = list(xdsl_parse_pipeline(text))
    except BaseException as e:  # xDSL's ArgSpecParseError derives from BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise LayerloomError(_syntax_error(text, e), "pipeline") from None
    passes: list[ModulePass] = []
    for spec in specs:
        if spec.name not in available:
            raise LayerloomError(
                f"unknown pass '{spec.name}' (available: {', '.join(sorted(available))})", "pipeline"
            )
        pass_class = available[spec.name]()
        try:
            passes.append(pass_class.from_pass_spec(spec))
        except (ValueError, TypeError) as e:
            options = ", ".join(f.name.replace("_", "-") for f in fields(pass_class)) or "none"
            raise LayerloomError(f"pass '{spec.name}': {e} (its options: {options})", "pipeline") from None
    return PassPipeline(tuple(passes))


def _syntax_error(text: str, error: BaseException) -> str:
    """xDSL reports 'file:line:col', the text, a caret and the reason; keep column and reason."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    reason = lines[-1] if lines else "syntax error"
    column = next((ln.rsplit(":", 1)[-1] for ln in lines if ln.startswith("pass-pipeline:")), "?")
    return f"malformed pipeline '{text}' at column {column}: {reason}"


def run_pipeline(program: Program, pipeline: str | PassPipeline, verify_each: bool = True) -> Program:
    """Apply `pipeline` to `program` in place and return it; verify after every pass."""
    passes = parse_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
    ctx = make_context()

    def check(previous: ModulePass | None, module: ModuleOp, _next: ModulePass | None) -> None:
        if not verify_each:
            return
        try:
            module.verify()
        except VerifyException as e:
            after = f"after pass '{previous.name}'" if previous else "before the first pass"
            raise LayerloomError(f"IR does not verify {after}: {str(e).splitlines()[0]}", program.source) from None

    PassPipeline(passes.passes, check).apply(ctx, program.module)
    # Passes store new arrays beside the old ones (arrays are shared, never mutated);
    # drop those no op refers to any more, or peak memory doubles (fold-batchnorm).
    program.drop_unused_weights()
    return program
