"""`layerloom-opt`: xDSL's `-opt` driver with layerloom's dialects and passes.

    layerloom-opt model.mlir -p 'canonicalize,fold-batchnorm' -o folded.mlir --weights-out folded.npz

Everything of `xdsl-opt` works (`-p`, `--print-op-generic`, `--split-input-file`,
`--verify-diagnostics`, `--time-passes`, ...). What layerloom adds is the weight store:

- in: the arrays come from `--weights PATH`, else from `weights.npz` beside the input file
  if there is one; inline `value`s of `nn.weight` ops are moved into the store;
- out: with `--weights-out PATH` the weights the output uses are saved there and the IR
  refers to them by handle. Otherwise weights are printed inline unless the input weights
  file holds them unchanged (so the output works with that same file, and a file without
  a weights file stays self-contained). `--inline-weights` prints every weight inline.

Bad input (unreadable or unparsable file, IR that does not verify, unknown pass or
option, malformed pipeline) is reported as one line `layerloom-opt: error: ...`, exit 2.
See docs/passes.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
from xdsl.dialects.builtin import Builtin, ModuleOp, TensorType
from xdsl.dialects.func import Func
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, ParseError
from xdsl.xdsl_opt_main import xDSLOptMain

from compiler.errors import LayerloomError
from compiler.program import WEIGHTS_FILE, Program, WeightStore, dense_attr_of, weights_of
from compiler.registry import XDSL_INPUT_ERRORS, all_dialects, all_passes, xdsl_input_error
from dialects.nn import WeightOp

PROG = "layerloom-opt"


class LayerloomOptMain(xDSLOptMain):
    version_format = "layerloom-opt on xDSL {xdsl_version}"

    def __init__(self, args: Sequence[str] | None = None) -> None:
        super().__init__(description="layerloom's modular optimizer: run layerloom passes over nn IR", args=args)
        if self.args.weights_out and self.args.split_input_file:
            raise LayerloomError("--weights-out cannot be combined with --split-input-file", "arguments")
        # The arrays of the input weights file; each parsed module gets its own store over them.
        self.input_weights: dict[str, np.ndarray] = dict(self.find_input_weights().items())
        self.outputs: list[ModuleOp] = []

    def register_all_dialects(self) -> None:
        self.ctx.load_dialect(Builtin)
        self.ctx.load_dialect(Func)
        for name, factory in all_dialects().items():
            self.ctx.register_dialect(name, factory)

    def register_all_passes(self) -> None:
        for name, factory in all_passes().items():
            self.register_pass(name, factory)

    def register_all_arguments(self, arg_parser: argparse.ArgumentParser) -> None:
        super().register_all_arguments(arg_parser)
        arg_parser.prog = PROG
        arg_parser.add_argument(
            "--weights", metavar="PATH", help=f"weights (.npz) for the input's handles (default: {WEIGHTS_FILE} beside it)"
        )
        arg_parser.add_argument(
            "--weights-out", metavar="PATH", help="save the output's weights here (.npz) and print handles only"
        )
        arg_parser.add_argument(
            "--inline-weights", action="store_true", help="print the data of every weight inline in the output"
        )

    def find_input_weights(self) -> WeightStore:
        if self.args.weights:
            return WeightStore.load(self.args.weights)
        if self.args.input_file and (beside := Path(self.args.input_file).parent / WEIGHTS_FILE).is_file():
            return WeightStore.load(beside)
        return WeightStore()

    def prepare_input(self) -> tuple[list[tuple[IO[bytes], int]], str]:
        try:
            return super().prepare_input()
        except ValueError as e:  # an unknown file extension
            raise LayerloomError(f"{e} (use -f mlir)", self.get_input_name()) from None

    def prepare_output(self) -> IO[str]:
        if self.args.output_file:
            Path(self.args.output_file).parent.mkdir(parents=True, exist_ok=True)
        return super().prepare_output()

    def parse_chunk(self, chunk: IO[bytes], file_extension: str, start_offset: int = 0) -> ModuleOp | None:
        try:
            module = super().parse_chunk(chunk, file_extension, start_offset)
        except XDSL_INPUT_ERRORS as e:
            raise xdsl_input_error(e, self.get_input_name(), self.chunk_text(chunk, start_offset)) from None
        if module is None:
            return None
        if not self.args.disable_verify:
            try:
                module.verify()  # before reading inline values, which must match their types
            except ValueError as e:  # see XDSL_INPUT_ERRORS (its VerifyExceptions stay for --verify-diagnostics)
                raise LayerloomError(f"IR does not verify: {one_line(e)}", self.get_input_name()) from None
        Program(module, WeightStore(self.input_weights), self.get_input_name())
        return module

    @staticmethod
    def chunk_text(chunk: IO[bytes], start_offset: int) -> str | None:
        """The text of a chunk already parsed (None when it cannot be read again)."""
        try:
            chunk.seek(start_offset)
            return chunk.read().decode(errors="replace")
        except (OSError, ValueError):
            return None

    def output_resulting_program(self, prog: ModuleOp) -> str:
        store = weights_of(prog)
        for op in prog.walk():
            if isinstance(op, WeightOp) and op.handle.data in store and self.prints_inline(op.handle.data, store):
                assert isinstance(op.result.type, TensorType)
                op.properties["value"] = dense_attr_of(store[op.handle.data], op.result.type)
        self.outputs.append(prog)
        return super().output_resulting_program(prog)

    def prints_inline(self, handle: str, store: WeightStore) -> bool:
        if self.args.inline_weights:
            return True
        if self.args.weights_out:
            return False
        return store[handle] is not self.input_weights.get(handle)

    def run(self) -> None:
        super().run()
        if self.args.weights_out:
            for module in self.outputs:  # one module: --split-input-file is refused with --weights-out
                store = weights_of(module)
                store.keep_only({op.handle.data for op in module.walk() if isinstance(op, WeightOp)})
                store.save(self.args.weights_out)


def one_line(e: BaseException) -> str:
    """The first meaningful line of an xDSL diagnostic (they print source and IR below)."""
    if isinstance(e, ParseError):
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        # "file:line:col", the source line, a caret line, the reason.
        return f"{lines[0]}: {lines[-1].strip()}" if len(lines) > 1 else (lines[0] if lines else "parse error")
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {e.strerror}"
    if isinstance(e, ArgSpecParseError):
        return "malformed pipeline: " + " ".join(ln.strip() for ln in str(e).splitlines()[1:] if ln.strip())
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    tool: LayerloomOptMain | None = None
    try:
        try:
            tool = LayerloomOptMain(args=argv)
        except ValueError as e:  # unknown pass or pass option
            raise LayerloomError(str(e), "pipeline") from None
        tool.run()
    except (LayerloomError, ParseError, DiagnosticException, ArgSpecParseError, OSError) as e:
        where = ""
        if tool is not None and isinstance(e, DiagnosticException) and not isinstance(e, ParseError):
            where = f"{tool.get_input_name()}: "  # a verifier's message (a ParseError names its place)
        print(f"{PROG}: error: {where}{one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
