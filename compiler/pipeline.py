"""Running pass pipelines written as text, the same syntax as `layerloom-opt -p`."""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.utils.exceptions import VerifyException

from compiler.errors import LayerloomError
from compiler.program import Program
from compiler.registry import all_passes, make_context


def parse_pipeline(text: str) -> PassPipeline:
    """Parse `pass-a,pass-b{opt=1}`; unknown passes, options or syntax raise LayerloomError."""
    available = all_passes()
    try:
        return PassPipeline.parse_spec(available, text)
    except ValueError as e:
        raise LayerloomError(f"{e} (available passes: {', '.join(sorted(available))})", "pipeline") from None
    except BaseException as e:  # xDSL's ArgSpecParseError derives from BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise LayerloomError(f"malformed pipeline '{text}': {e}", "pipeline") from None


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
    return program
