"""The `layerloom` driver: `layerloom compile MODEL.onnx -o OUT/` and `layerloom run OUT/ ...`.

Three registries keep it open to later issues without edits here:
- commands (`register_command`): each subcommand is a name, a help line, a function that
  adds its flags and a function that runs it;
- targets (`register_target`): what `compile --target NAME` does after the pipeline, the
  pipeline it runs by default, its own flags, and the runner `run` uses by default;
- runners (`register_runner`): what `run --with NAME` executes a build folder with.

Every `LayerloomError` becomes one line `layerloom: error: <where>: <message>` and exit
code 2; argparse errors also exit 2; anything else is a bug: one line, exit code 3
(`--debug` keeps the traceback). Heavy modules are imported inside the commands so that
`layerloom --help` stays quick.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from compiler.errors import LayerloomError

if TYPE_CHECKING:
    import numpy as np

    from compiler.program import Program

SUMMARY_FILE = "summary.json"
DEFAULT_PIPELINE = "canonicalize,fold-batchnorm,fuse-activation"
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3


# --- registries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# (folder, program, inputs) -> outputs; runners registered with `traces=True` also take `trace=PATH`.
Runner = Callable[..., "dict[str, np.ndarray]"]


@dataclass(frozen=True)
class Target:
    """What `compile --target NAME` produces. `build` writes the target's own artifacts into
    the build folder (beside model.mlir, weights.npz and summary.json, which every target
    gets) and returns extra entries for summary.json. `calibrate_randomly`: without --calib,
    its quantize pass calibrates on seeded random inputs (with a note) instead of failing."""

    name: str
    description: str
    default_pipeline: str
    runner: str
    configure: Callable[[argparse._ArgumentGroup], None] | None = None
    build: Callable[[Program, Path, argparse.Namespace], dict[str, object]] | None = None
    calibrate_randomly: bool = False
    pipeline_for: Callable[[argparse.Namespace], str] | None = None  # the default pipeline, when the flags choose it


COMMANDS: dict[str, Command] = {}
TARGETS: dict[str, Target] = {}
RUNNERS: dict[str, Runner] = {}
TRACING_RUNNERS: set[str] = set()


def register_command(command: Command) -> None:
    COMMANDS[command.name] = command


def register_target(target: Target) -> None:
    TARGETS[target.name] = target


def register_runner(name: str, runner: Runner, traces: bool = False) -> None:
    RUNNERS[name] = runner
    if traces:
        TRACING_RUNNERS.add(name)


def lookup_target(name: str) -> Target:
    if name not in TARGETS:
        raise LayerloomError(f"unknown target '{name}' (known targets: {', '.join(sorted(TARGETS))})", "--target")
    return TARGETS[name]


def lookup_runner(name: str) -> Runner:
    if name not in RUNNERS:
        raise LayerloomError(f"unknown runner '{name}' (known runners: {', '.join(sorted(RUNNERS))})", "--with")
    return RUNNERS[name]


# --- compile -------------------------------------------------------------------------------


def configure_compile(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the ONNX model to compile")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="build folder to write (replaced on success)")
    p.add_argument("--target", default="reference", help=f"what to build for (known: {', '.join(sorted(TARGETS))})")
    p.add_argument("--pipeline", metavar="TEXT", help=f"pass pipeline ('' runs none; default: the target's, '{DEFAULT_PIPELINE}')")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                   help="fix an input's shape, e.g. input=1x3x224x224 (repeatable)")
    p.add_argument("--print-weights", action="store_true", help="also print the weights inline in model.mlir")
    p.add_argument("--calib", metavar="FILE", help="calibration inputs (.npz keyed by input name) for the quantize pass")
    # Flags that several targets share (--hw, --calib, ...) belong here, not to each target:
    # argparse refuses a flag defined twice.
    for target in TARGETS.values():
        if target.configure is not None:
            target.configure(p.add_argument_group(f"{target.name} target"))


def run_compile(args: argparse.Namespace) -> int:
    from compiler.analysis import analyze, layer_table
    from compiler.onnx_import import import_onnx
    from compiler.pipeline import parse_pipeline, run_pipeline

    # Everything that can be checked cheaply is checked before the model is read.
    target = lookup_target(args.target)
    default_pipeline = target.pipeline_for(args) if target.pipeline_for is not None else target.default_pipeline
    pipeline_text = (default_pipeline if args.pipeline is None else args.pipeline).strip()
    passes = parse_pipeline(pipeline_text)
    if args.calib:
        from passes.quantize import with_calibration

        passes = with_calibration(passes, args.calib)
    input_shapes = parse_input_shapes(args.input_shape)
    out = Path(args.output)
    check_replaceable(out)
    model = Path(args.model)
    if not model.is_file():
        raise LayerloomError("file not found" if not model.exists() else "not a file", str(model))

    program = import_onnx(str(model), input_shapes or None)
    with tempfile.TemporaryDirectory() as scratch:
        if not args.calib and target.calibrate_randomly and any(p.name == "quantize" for p in passes.passes):
            from passes.quantize import with_calibration

            passes = with_calibration(passes, random_calibration(program, Path(scratch)))
            print(f"layerloom: note: no --calib: calibrating on {RANDOM_CALIBRATION_SAMPLES} seeded random inputs "
                  "(standard normal); give --calib FILE for scales that fit real data", file=sys.stderr)
        run_pipeline(program, passes, verify_each=True)
    layers = analyze(program)

    with build_folder(out) as folder:
        program.save(folder, inline_weights=args.print_weights)
        extra = target.build(program, folder, args) if target.build is not None else {}
        summary = make_summary(program, layers, model=str(model), target=target.name, pipeline=pipeline_text) | extra
        write_json(folder / SUMMARY_FILE, summary)

    sys.stdout.write(layer_table(layers))
    print(f"wrote {out}/ (model.mlir, weights.npz, {SUMMARY_FILE}) for target '{target.name}'")
    return 0


RANDOM_CALIBRATION_SAMPLES = 4


def random_calibration(program: Program, folder: Path) -> Path:
    """An .npz of seeded standard-normal samples for every input (a stand-in for --calib)."""
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {n: rng.standard_normal((RANDOM_CALIBRATION_SAMPLES, *t.get_shape()[1:])).astype(np.float32)
              for n, t in zip(program.input_names, program.input_types, strict=True)}
    path = folder / "random_calibration.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def parse_input_shapes(specs: list[str]) -> dict[str, Sequence[int]]:
    """`NAME=1x3x224x224` strings -> {NAME: [1, 3, 224, 224]}."""
    shapes: dict[str, Sequence[int]] = {}
    for spec in specs:
        name, _, dims = spec.rpartition("=")
        try:
            shape = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            shape = []
        if not name or not shape or min(shape) < 1:
            raise LayerloomError(f"'{spec}' is not NAME=DIMS with positive DIMS (e.g. input=1x3x224x224)", "--input-shape")
        if name in shapes:
            raise LayerloomError(f"input '{name}' is given twice", "--input-shape")
        shapes[name] = shape
    return shapes


def make_summary(program: Program, layers: list, *, model: str, target: str, pipeline: str) -> dict[str, object]:
    from compiler.analysis import totals

    return {
        "layerloom": _version(),
        "model": model,
        "target": target,
        "pipeline": pipeline,
        "inputs": _io_entries(program.input_names, program.input_types),
        "outputs": _io_entries(program.output_names, program.output_types),
        "layers": [layer.as_dict() for layer in layers],
        "totals": totals(layers).as_dict(),
    }


def _io_entries(names: list[str], types: list) -> list[dict[str, object]]:
    from compiler.tensors import dtype_of

    return [{"name": n, "shape": list(t.get_shape()), "dtype": str(dtype_of(t))} for n, t in zip(names, types, strict=True)]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("layerloom")
    except PackageNotFoundError:
        return "unknown"


# A list of numbers that json.dumps(indent=2) spread over several lines: shapes read better on one.
_NUMBER_LIST = re.compile(r"\[\s*((?:-?\d+,\s*)*-?\d+)\s*\]")


def write_json(path: Path, data: object) -> None:
    from compiler.program import atomic_write_with

    def one_line_list(m: re.Match[str]) -> str:
        return "[" + ", ".join(n.strip() for n in m.group(1).split(",")) + "]"

    text = _NUMBER_LIST.sub(one_line_list, json.dumps(data, indent=2)) + "\n"
    atomic_write_with(path, lambda tmp: Path(tmp).write_text(text))


def check_replaceable(out: Path) -> None:
    """Only an empty folder or an earlier build folder may be replaced: `-o ~` must not
    delete a home directory."""
    if not out.exists():
        return
    if not out.is_dir():
        raise LayerloomError("exists and is not a folder", str(out))
    if any(out.iterdir()) and not (out / SUMMARY_FILE).is_file():
        raise LayerloomError(f"exists and is not a layerloom build folder (no {SUMMARY_FILE}); "
                             "remove it or choose another", str(out))


@contextmanager
def build_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out`, renamed to `out` when the block succeeds (an
    existing `out` is replaced only then); on any error nothing is left behind."""
    out = Path(os.path.abspath(out))
    created = _make_parents(out.parent)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; a build folder is an ordinary folder
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "build")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            _rmdir_if_empty(d)
        raise


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return those created, outermost first."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()][::-1]
    for p in missing:
        p.mkdir()
    return missing


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- run -----------------------------------------------------------------------------------


def configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("build", help="a build folder written by 'layerloom compile' (or its model.mlir)")
    p.add_argument("--input", required=True, metavar="FILE",
                   help=".npz keyed by graph input names (or .npy for a single-input model)")
    p.add_argument("--output", required=True, metavar="FILE",
                   help=".npz to write, keyed by graph output names (or .npy for a single-output model)")
    p.add_argument("--with", dest="runner", metavar="RUNNER",
                   help=f"what executes the build (known: {', '.join(sorted(RUNNERS))}; default: the target's)")
    p.add_argument("--trace", metavar="FILE", help="also write a Chrome / Perfetto trace of the run "
                   f"(runners that time hardware: {', '.join(sorted(TRACING_RUNNERS)) or 'none'})")
    p.add_argument("--check-hazards", action="store_true",
                   help="dpu: check model.bin's dependency tokens even when the build recorded it checked")


def run_run(args: argparse.Namespace) -> int:
    from backends.reference.executor import checked_inputs
    from compiler.program import Program

    build = Path(args.build)
    if not build.exists():
        raise LayerloomError("build folder not found (write one with 'layerloom compile MODEL -o DIR')", str(build))
    folder = build if build.is_dir() else build.parent
    runner_name = args.runner or _target_runner(folder)
    runner = lookup_runner(runner_name)
    options: dict[str, Any] = {"trace": Path(args.trace)} if args.trace else {}
    if options and runner_name not in TRACING_RUNNERS:
        raise LayerloomError(f"runner '{runner_name}' writes no trace (runners that do: "
                             f"{', '.join(sorted(TRACING_RUNNERS)) or 'none'})", "--trace")
    if args.check_hazards:
        if runner_name != "dpu":
            raise LayerloomError(f"runner '{runner_name}' has no hazard check (the dpu runner does)", "--check-hazards")
        options["check_hazards"] = True
    output = Path(args.output)
    program = Program.load(build)
    inputs = read_inputs(Path(args.input), program.input_names)
    # Every build folder keeps the IR's signature, so inputs are checked the same for every runner.
    checked_inputs(program.main, program.input_names, inputs, args.input)
    _check_output_format(output, program.output_names)
    outputs = runner(folder, program, inputs, **options)
    write_outputs(output, outputs)
    shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))} {v.dtype}" for k, v in outputs.items())
    print(f"wrote {output} ({shapes})")
    return 0


def _target_runner(folder: Path) -> str:
    """The default runner of the target the folder was built for (reference if unknown)."""
    try:
        target = json.loads((folder / SUMMARY_FILE).read_text()).get("target", "reference")
    except (OSError, ValueError, AttributeError):
        target = "reference"
    return TARGETS[target].runner if target in TARGETS else "reference"


_NPZ_MAGIC = b"PK"
_NPY_MAGIC = b"\x93NUMPY"


def read_inputs(path: Path, input_names: list[str]) -> dict[str, np.ndarray]:
    """The arrays of an .npz (keyed by input name) or of an .npy (the only input)."""
    import zipfile

    import numpy as np

    if not path.is_file():
        raise LayerloomError("file not found" if not path.exists() else "not a file", str(path))
    with path.open("rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if not (magic.startswith(_NPZ_MAGIC) or magic == _NPY_MAGIC):
        raise LayerloomError("not an .npz or .npy file", str(path))
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            if len(input_names) != 1:
                raise LayerloomError(f"an .npy file holds one array but the model has {len(input_names)} inputs "
                                     f"({', '.join(input_names)}); use an .npz keyed by input name", str(path))
            return {input_names[0]: data}
        with data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise LayerloomError(f"cannot read arrays: {e}", str(path)) from None


def _check_output_format(path: Path, output_names: list[str]) -> None:
    if path.suffix == ".npy" and len(output_names) != 1:
        raise LayerloomError(f"an .npy file holds one array but the model has {len(output_names)} outputs "
                             f"({', '.join(output_names)}); use an .npz", str(path))


def write_outputs(path: Path, outputs: dict[str, np.ndarray]) -> None:
    """Write atomically; through a file object, so NumPy does not append `.npz` to the name."""
    import numpy as np

    from compiler.program import atomic_write_with

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            if path.suffix == ".npy":
                np.save(f, next(iter(outputs.values())))
            else:
                np.savez(f, **cast("dict[str, Any]", outputs))  # NumPy's stubs reject **arrays

    atomic_write_with(path, write)


# --- built-in target and runner ------------------------------------------------------------


def run_reference(folder: Path, program: Program, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from backends.reference import execute

    return execute(program, inputs)


register_target(Target("reference", "the nn-level IR, run by the NumPy reference executor", DEFAULT_PIPELINE, "reference"))
register_runner("reference", run_reference)
register_command(Command("compile", "import an ONNX model, run the pass pipeline, write a build folder",
                         configure_compile, run_compile))
register_command(Command("run", "run a build folder on inputs from an .npz / .npy file", configure_run, run_run))
import backends.dpu.target  # noqa: E402, F401 -- registers the dpu target and runner
import backends.hls.target  # noqa: E402, F401 -- registers the hls target and runner

# Subcommands defined in other modules register themselves when imported.
import compiler.commands  # noqa: E402, F401

# --- entry point ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is two short lines (exit code 2), not the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="layerloom", description="Compile ONNX CNNs for accelerators and run the result.")
    parser.add_argument("--version", action="version", version=f"layerloom {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    # --debug is accepted after the subcommand too; SUPPRESS keeps the subparser from resetting it.
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.help, parents=[common])
        command.configure(p)
        p.set_defaults(handler=command.run)
    return parser


def one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except LayerloomError as e:
        print(f"layerloom: error: {one_line(str(e))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("layerloom: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `layerloom compile ... | head`: the work is done; only the table was cut short.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as e:  # xDSL raises some errors as BaseException subclasses
        if isinstance(e, SystemExit):
            raise
        if args.debug:
            traceback.print_exc()
        print(f"layerloom: internal error: {type(e).__name__}: {one_line(str(e))} (please report)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
