"""`layerloom-opt`: weights in and out, errors as one line, and real MLIR accepting its
generic output."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.reference import execute
from compiler.errors import LayerloomError
from compiler.opt import main
from compiler.program import Program
from compiler.registry import parse_module
from dialects.nn import NN
from tests.test_passes import small_cnn

ROOT = Path(__file__).resolve().parents[1]

MLIR_OPT = Path("/usr/bin/mlir-opt-22")
SMALL_IR = Path(__file__).parent / "filecheck" / "pipeline.mlir"
FOLD = "canonicalize,fold-batchnorm,fuse-activation"


def opt(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Program]:
    """A program saved as `layerloom compile` leaves it: model.mlir + weights.npz."""
    program = small_cnn(np.random.default_rng(0))
    program.save(tmp_path / "model")
    return tmp_path / "model" / "model.mlir", program


def run_on(program: Program) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    return execute(program, {"x": x})["y"]


def test_without_weights_file_weights_print_inline(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = opt(capsys, SMALL_IR, "-p", FOLD)
    assert code == 0, err
    assert 'nn.weight "conv.w.bn" {value = dense<' in out
    # The output is self-contained: it loads and runs with no weights file.
    (tmp_path / "out.mlir").write_text(out)
    program = Program.load(tmp_path / "out.mlir")
    assert program.weights["conv.bias.bn"].tolist() == [-1.0, 1.0]


def test_weights_file_beside_input_is_used_and_unchanged_weights_stay_handles(
    capsys: pytest.CaptureFixture[str], saved: tuple[Path, Program], tmp_path: Path
) -> None:
    path, original = saved
    code, out, err = opt(capsys, path, "-p", FOLD)
    assert code == 0, err
    inline = [line for line in out.splitlines() if "value = dense<" in line]
    # The three folded layers' weights are new (inline); the folded fc weight too.
    assert len(inline) == 6, out
    assert 'nn.weight "fc.b"' not in out  # folded into a new bias
    # With the input's weights file the output runs and computes the same.
    (path.parent / "folded.mlir").write_text(out)
    np.testing.assert_allclose(run_on(Program.load(path.parent / "folded.mlir")), run_on(original), rtol=1e-4, atol=1e-5)


def test_no_new_weights_no_inline_data(capsys: pytest.CaptureFixture[str], saved: tuple[Path, Program]) -> None:
    path, _ = saved
    code, out, err = opt(capsys, path, "-p", "fuse-activation")
    assert code == 0, err
    assert "value = dense" not in out
    assert 'nn.weight "conv1.w" : tensor<8x3x3x3xf32>' in out


def test_weights_out_saves_exactly_the_used_weights(
    capsys: pytest.CaptureFixture[str], saved: tuple[Path, Program], tmp_path: Path
) -> None:
    path, original = saved
    out_ir, out_npz = tmp_path / "o" / "folded.mlir", tmp_path / "o" / "folded.npz"
    out_ir.parent.mkdir()
    code, out, err = opt(capsys, path, "-p", FOLD, "-o", out_ir, "--weights-out", out_npz)
    assert code == 0, err
    text = out_ir.read_text()
    assert "value = dense" not in text
    folded = Program.load(out_ir, weights=out_npz)
    used = {line.split('"')[1] for line in text.splitlines() if "nn.weight" in line}
    assert set(folded.weights) == used and len(used) == 6
    np.testing.assert_allclose(run_on(folded), run_on(original), rtol=1e-4, atol=1e-5)


def test_explicit_weights_and_inline_weights(
    capsys: pytest.CaptureFixture[str], saved: tuple[Path, Program], tmp_path: Path
) -> None:
    path, original = saved
    elsewhere = tmp_path / "elsewhere.mlir"
    shutil.copy(path, elsewhere)
    code, out, err = opt(capsys, elsewhere, "--weights", path.parent / "weights.npz", "--inline-weights")
    assert code == 0, err
    assert out.count("value = dense<") == len(original.weights)
    (tmp_path / "inline.mlir").write_text(out)
    np.testing.assert_array_equal(run_on(Program.load(tmp_path / "inline.mlir")), run_on(original))


@pytest.mark.parametrize(
    "args, message",
    [
        (["-p", "no-such-pass"], "Unrecognized passes: ['no-such-pass']"),
        (["-p", "fold-batchnorm{x=1}"], "pipeline"),
        (["-p", "canonicalize{"], "malformed pipeline"),
        (["-p", "canonicalize,,"], "malformed pipeline"),
        (["--weights", "/nonexistent/w.npz"], "weight file not found"),
    ],
)
def test_bad_arguments_give_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = opt(capsys, SMALL_IR, *args)
    assert code == 2
    assert err.startswith("layerloom-opt: error: ") and message in err
    assert len(err.strip().splitlines()) == 1, err
    assert out == ""


@pytest.mark.parametrize(
    "text, message",
    [
        ("this is not MLIR\n", "bad.mlir:1:"),
        ("func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n  %y = nn.relu %x : (tensor<2xf32>) -> tensor<3xf32>\n"
         "  func.return %x : tensor<2xf32>\n}\n", "nn.relu: result shape (3,) should be (2,)"),
        ("func.func @f() -> tensor<2xf32> {\n  %w = nn.weight \"w\" : tensor<2xf32>\n", "bad.mlir:3:"),
        ("func.func @f() -> tensor<2xf32> {\n  %w = nn.weight \"w\" {value = dense<[1, 2]> : tensor<2xi32>} : tensor<2xf32>\n"
         "  func.return %w : tensor<2xf32>\n}\n", "nn.weight: inline value of type i32 differs from the result's f32"),
        ("func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n  %y = nn.pool %x {kind = \"max\", kernel = array<i1000000: 3>}"
         " : (tensor<2xf32>) -> tensor<2xf32>\n  func.return %y : tensor<2xf32>\n}\n",
         "bad.mlir: invalid attribute: Format not implemented for i1000000"),
        ("func.func @f() -> tensor<3xi8> {\n  %w = nn.weight \"w\" {value = dense<[1,( -2, 3]> : tensor<3xi8>} : tensor<3xi8>\n"
         "  func.return %w : tensor<3xi8>\n}\n", "bad.mlir:2:47: unexpected ']', expected ')'"),
        ("func.func @f() -> tensor<2xf32> {\n  %a = nn.weight \"w\" {value = dense<[1.0, 2.0]> : tensor<2xf32>} : tensor<2xf32>\n"
         "  %b = nn.weight \"w\" {value = dense<[1.0, 3.0]> : tensor<2xf32>} : tensor<2xf32>\n"
         "  %c = nn.add %a, %b : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>\n  func.return %c : tensor<2xf32>\n}\n",
         'bad.mlir: nn.weight "w" is given two different inline values'),
        ("func.func @f(%x: tensor<2xi2147483648>) -> tensor<2xi2147483648> {\n  func.return %x : tensor<2xi2147483648>\n}\n",
         "bad.mlir: integer type bitwidth 2147483648 is above MLIR's limit of 16777215"),
    ],
    ids=["garbage", "does-not-verify", "truncated", "inline-value-of-another-type", "unpackable-integer-width",
         "parser-assertion", "one-handle-two-values", "integer-width-above-mlir-limit"],
)
def test_bad_input_files_give_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "bad.mlir").write_text(text)
    code, _, err = opt(capsys, tmp_path / "bad.mlir", "-p", "canonicalize")
    assert code == 2
    assert err.startswith("layerloom-opt: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "text, message",
    [
        ("func.func @f() -> tensor<2xf32> {\n  %w = nn.weight \"w\" {value = dense<[1, 2]> : tensor<2xi32>} : tensor<2xf32>\n"
         "  func.return %w : tensor<2xf32>\n}\n", "inline value of type i32 differs from the result's f32"),
        ("func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n  %y = nn.pool %x {kind = \"max\", kernel = array<i1000000: 3>}"
         " : (tensor<2xf32>) -> tensor<2xf32>\n  func.return %y : tensor<2xf32>\n}\n", "invalid attribute"),
    ],
)
def test_malformed_attributes_are_layerloom_errors(text: str, message: str) -> None:
    """What xDSL checks while building attributes, or trips on while reporting a malformed
    op, reaches `layerloom run` (Program.load) as one LayerloomError, not a ValueError."""
    with pytest.raises(LayerloomError, match=message):
        parse_module(text, "bad.mlir")


def test_missing_input_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = opt(capsys, tmp_path / "missing.mlir")
    assert code == 2 and err.strip() == f"layerloom-opt: error: {tmp_path / 'missing.mlir'}: No such file or directory"


def test_console_script_on_a_compiled_model(saved: tuple[Path, Program]) -> None:
    path, _ = saved
    tool = Path(sys.executable).parent / "layerloom-opt"
    result = subprocess.run([tool, path, "-p", "canonicalize"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "nn.conv2d" in result.stdout and "nn.identity" not in result.stdout
    bad = subprocess.run([tool, path, "-p", "canonicalize{"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("layerloom-opt: error: malformed pipeline")


@pytest.mark.skipif(not MLIR_OPT.exists(), reason="mlir-opt-22 (Debian package mlir-22-tools) is not installed")
@pytest.mark.parametrize("source", ["inline", "handles"])
def test_real_mlir_opt_accepts_generic_output(
    capsys: pytest.CaptureFixture[str], saved: tuple[Path, Program], source: str
) -> None:
    path = SMALL_IR if source == "inline" else saved[0]
    code, out, err = opt(capsys, path, "-p", FOLD, "--print-op-generic")
    assert code == 0, err
    assert '"nn.conv2d"' in out
    result = subprocess.run(
        [MLIR_OPT, "--allow-unregistered-dialect"], input=out, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "nn.conv2d" in result.stdout


def doc_examples(path: Path) -> list[str]:
    """The ```mlir blocks of a markdown file, as modules: a block that is a module stays
    one; every other line `%r = nn.op %a, ... : (types) -> types` becomes a function whose
    arguments are its operands."""
    blocks = re.findall(r"```mlir\n(.*?)```", path.read_text(), re.S)
    modules = [b for b in blocks if b.startswith("builtin.module")]
    for line in (ln.strip() for b in blocks if not b.startswith("builtin.module") for ln in b.splitlines()):
        head, types = line.rsplit(" : ", 1)
        results = re.findall(r"%\w+", head.split(" = ")[0])
        operands = list(dict.fromkeys(re.findall(r"%\w+", head.split(" = ")[1].split("{")[0])))
        ins, _, outs = types.partition(" -> ")
        in_types = [t for t in ins.strip("()").split(", ") if t] if outs else []
        out_types = (outs or ins).strip("()").split(", ")
        args = ", ".join(f"{v}: {t}" for v, t in zip(operands, in_types, strict=True))
        signature = ", ".join(out_types)
        modules.append(
            f"func.func @f({args}) -> ({signature}) {{\n  {line}\n  func.return {', '.join(results)} : {signature}\n}}"
        )
    return modules


def test_every_example_in_the_nn_dialect_reference_verifies() -> None:
    examples = doc_examples(Path(__file__).parents[1] / "docs" / "dialects" / "nn.md")
    ops_in_doc = {op for text in examples for op in re.findall(r"nn\.[a-z_0-9]+", text) if op != "nn.name"}
    assert ops_in_doc >= {op.name for op in NN.operations}
    for text in examples:
        parse_module(text, "docs/dialects/nn.md")  # parses and verifies


def test_a_string_left_open_is_an_error_at_once(tmp_path: Path) -> None:
    """A weight blob that lost its opening quote leaves a string open to the end of its line:
    xDSL's own lexer took minutes over it (compiler/xdsl_fixes.py); a subprocess, so that a
    regression fails by its timeout instead of hanging the suite."""
    blob = "0x" + "0000803F" * 2000
    (tmp_path / "bad.mlir").write_text(
        "func.func @f() -> tensor<2000xf32> {\n"
        f'  %w = nn.weight "w" {{name = "weight_with_a_long_name", value = dense<{blob}"> : tensor<2000xf32>}} : tensor<2000xf32>\n'
        "  func.return %w : tensor<2000xf32>\n}\n"
    )
    done = subprocess.run([sys.executable, "-m", "compiler.opt", str(tmp_path / "bad.mlir")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("End of file reached before closing string literal."), done.stderr
    assert done.stderr.startswith(f"layerloom-opt: error: {tmp_path / 'bad.mlir'}:2:") and len(done.stderr.splitlines()) == 1
