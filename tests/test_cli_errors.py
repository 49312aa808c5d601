"""Bad input to the installed `layerloom` command: each case must exit with code 2, print
at most three lines, no traceback, name the problem and where it is, and leave no output
(folder, file or temporary) behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

LAYERLOOM = str(Path(sys.executable).with_name("layerloom"))
value_info = helper.make_tensor_value_info


def make_model(nodes: list[onnx.NodeProto], inputs: list, outputs: list, initializers: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bad", inputs, outputs, initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def relu_model() -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")],
                      [value_info("x", TensorProto.FLOAT, [1, 4])], [value_info("y", TensorProto.FLOAT, [1, 4])])


def layerloom(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LAYERLOOM, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good build folder of a one-input model (x: 1x4 float32) for the `run` cases."""
    folder = tmp_path_factory.mktemp("good")
    onnx.save(relu_model(), folder / "relu.onnx")
    result = layerloom("compile", "relu.onnx", "-o", "build", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "build"


# --- compile cases: each writes its bad model into `d` and returns the arguments -----------


def truncated(d: Path) -> list[str]:
    data = relu_model().SerializeToString()
    (d / "m.onnx").write_bytes(data[: len(data) // 2])
    return ["m.onnx"]


def not_onnx(d: Path) -> list[str]:
    (d / "m.onnx").write_text("this is a text file, not a model\n")
    return ["m.onnx"]


def empty(d: Path) -> list[str]:
    (d / "m.onnx").write_bytes(b"")
    return ["m.onnx"]


def missing(d: Path) -> list[str]:
    return ["m.onnx"]


def cyclic(d: Path) -> list[str]:
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"], name="second")]
    onnx.save(make_model(nodes, [value_info("x", TensorProto.FLOAT, [1, 4])], [value_info("a", TensorProto.FLOAT, [1, 4])]),
              d / "m.onnx")
    return ["m.onnx"]


def undefined_name(d: Path) -> list[str]:
    nodes = [helper.make_node("Relu", ["ghost"], ["y"], name="haunted")]
    onnx.save(make_model(nodes, [value_info("x", TensorProto.FLOAT, [1, 4])], [value_info("y", TensorProto.FLOAT, [1, 4])]),
              d / "m.onnx")
    return ["m.onnx"]


def unsupported_ops(d: Path) -> list[str]:
    nodes = [helper.make_node("Det", ["x"], ["y"], name="determinant"),
             helper.make_node("Einsum", ["x", "x"], ["z"], name="einsum1", equation="ij,ij->ij")]
    outputs = [value_info("y", TensorProto.FLOAT, []), value_info("z", TensorProto.FLOAT, [4, 4])]
    onnx.save(make_model(nodes, [value_info("x", TensorProto.FLOAT, [4, 4])], outputs), d / "m.onnx")
    return ["m.onnx"]


def inconsistent_shapes(d: Path) -> list[str]:
    nodes = [helper.make_node("Add", ["x", "z"], ["y"], name="bad_add")]
    inputs = [value_info("x", TensorProto.FLOAT, [1, 3]), value_info("z", TensorProto.FLOAT, [1, 4])]
    onnx.save(make_model(nodes, inputs, [value_info("y", TensorProto.FLOAT, [1, 4])]), d / "m.onnx")
    return ["m.onnx"]


def absurd_size(d: Path) -> list[str]:
    shape = [100_000, 100_000, 100_000]
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    onnx.save(make_model(nodes, [value_info("x", TensorProto.FLOAT, shape)], [value_info("y", TensorProto.FLOAT, shape)]),
              d / "m.onnx")
    return ["m.onnx"]


def external_data_escape(d: Path) -> list[str]:
    (d.parent / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    w = numpy_helper.from_array(np.ones((1, 4), np.float32), "w_ext")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../secret.bin")
    nodes = [helper.make_node("Add", ["x", "w_ext"], ["y"], name="add")]
    onnx.save(make_model(nodes, [value_info("x", TensorProto.FLOAT, [1, 4])], [value_info("y", TensorProto.FLOAT, [1, 4])],
                         [w]), d / "m.onnx")
    return ["m.onnx"]


def with_flags(*flags: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        onnx.save(relu_model(), d / "m.onnx")
        return ["m.onnx", *flags]

    return setup


COMPILE_CASES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    # id: (setup, fragments the message must contain, case-insensitive)
    "truncated": (truncated, ["m.onnx", "onnx model"]),
    "not-onnx": (not_onnx, ["m.onnx", "onnx model"]),
    "empty": (empty, ["m.onnx", "empty"]),
    "missing": (missing, ["m.onnx", "not found"]),
    "cyclic": (cyclic, ["m.onnx", "cycle", "first", "second"]),
    "undefined-name": (undefined_name, ["haunted", "ghost", "not defined"]),
    "unsupported-op": (unsupported_ops, ["determinant", "Det", "einsum1", "Einsum", "unsupported"]),
    "inconsistent-shapes": (inconsistent_shapes, ["bad_add", "(1, 3)", "(1, 4)"]),
    "absurd-size": (absurd_size, ["m.onnx", "'x'", "size"]),
    "external-data-escape": (external_data_escape, ["w_ext", "../secret.bin", "folder"]),
    "bad-pipeline-text": (with_flags("--pipeline", "canonicalize{"), ["pipeline", "canonicalize{"]),
    "unknown-pass": (with_flags("--pipeline", "canonicalize,no-such-pass"), ["pipeline", "no-such-pass"]),
    "unknown-pass-option": (with_flags("--pipeline", "fold-batchnorm{bogus=1}"), ["pipeline", "bogus"]),
    "unknown-target": (with_flags("--target", "fpga"), ["--target", "fpga", "known targets:", "reference"]),
    "bad-input-shape-flag": (with_flags("--input-shape", "x=1x"), ["--input-shape", "x=1x"]),
    "input-shape-of-unknown-input": (with_flags("--input-shape", "nope=1x4"), ["m.onnx", "nope"]),
}


def check_clean_error(result: subprocess.CompletedProcess[str], fragments: list[str]) -> None:
    text = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, text
    assert "Traceback" not in text
    assert 1 <= len(text.splitlines()) <= 3, text
    assert text.startswith("layerloom: error: "), text
    for fragment in fragments:
        assert fragment.lower() in text.lower(), f"{fragment!r} not in {text!r}"


@pytest.mark.parametrize("case", COMPILE_CASES)
def test_bad_compile_input(case: str, tmp_path: Path) -> None:
    setup, fragments = COMPILE_CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    args = setup(work)
    before = set(work.iterdir())
    check_clean_error(layerloom("compile", *args, "-o", "out/build", cwd=work), fragments)
    assert set(work.iterdir()) == before, "compile left files behind"


# --- run cases -------------------------------------------------------------------------


def npz(**arrays: np.ndarray) -> Callable[[Path], str]:
    def setup(d: Path) -> str:
        np.savez(d / "in.npz", **arrays)
        return "in.npz"

    return setup


def text_file(d: Path) -> str:
    (d / "in.npz").write_text("x = [1, 2, 3, 4]\n")
    return "in.npz"


def pickled_npy(d: Path) -> str:
    np.save(d / "in.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return "in.npy"


ONES = np.ones((1, 4), np.float32)
RUN_CASES: dict[str, tuple[Callable[[Path], str], list[str]]] = {
    "missing-input": (npz(other=ONES), ["in.npz", "missing input 'x'"]),
    "extra-input": (npz(x=ONES, extra_one=ONES), ["in.npz", "extra_one"]),
    "wrong-shape": (npz(x=np.ones((1, 5), np.float32)), ["in.npz", "'x'", "1x5", "1x4"]),
    "wrong-dtype": (npz(x=np.ones((1, 4), np.float64)), ["in.npz", "'x'", "float64", "float32"]),
    "not-an-npz": (text_file, ["in.npz", "not an .npz"]),
    "pickled-npy": (pickled_npy, ["in.npy", "cannot read"]),
    "missing-file": (lambda d: "nothere.npz", ["nothere.npz", "not found"]),
}


@pytest.mark.parametrize("case", RUN_CASES)
def test_bad_run_input(case: str, build: Path, tmp_path: Path) -> None:
    setup, fragments = RUN_CASES[case]
    input_file = setup(tmp_path)
    before = set(tmp_path.iterdir())
    check_clean_error(layerloom("run", str(build), "--input", input_file, "--output", "y.npz", cwd=tmp_path), fragments)
    assert set(tmp_path.iterdir()) == before, "run left files behind"


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def not_utf8(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] = 0xFF  # never valid in UTF-8
    path.write_bytes(bytes(data))


DAMAGES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "weights-cut": ("weights.npz", cut_in_half, "cannot read weights"),
    "model-not-utf8": ("model.mlir", not_utf8, "not UTF-8 text"),
}


@pytest.mark.parametrize("case", DAMAGES)
def test_damaged_build_folder_is_named(case: str, build: Path, tmp_path: Path) -> None:
    """A damaged file of a build folder is a clean error naming that file, not an internal
    error (found by flipping and cutting the files of built folders)."""
    name, damage, message = DAMAGES[case]
    damaged = tmp_path / "build"
    shutil.copytree(build, damaged)
    damage(damaged / name)
    np.savez(tmp_path / "in.npz", x=ONES)
    result = layerloom("run", "build", "--input", "in.npz", "--output", "y.npz", cwd=tmp_path)
    check_clean_error(result, [name, message])


def test_run_of_a_missing_build_folder(tmp_path: Path) -> None:
    np.savez(tmp_path / "in.npz", x=ONES)
    result = layerloom("run", "no_build", "--input", "in.npz", "--output", "y.npz", cwd=tmp_path)
    check_clean_error(result, ["no_build", "not found"])
    assert not (tmp_path / "y.npz").exists()


def test_npy_input_for_a_two_input_model_is_refused(tmp_path: Path) -> None:
    nodes = [helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    inputs = [value_info(n, TensorProto.FLOAT, [1, 4]) for n in "ab"]
    onnx.save(make_model(nodes, inputs, [value_info("y", TensorProto.FLOAT, [1, 4])]), tmp_path / "add.onnx")
    assert layerloom("compile", "add.onnx", "-o", "build", cwd=tmp_path).returncode == 0
    np.save(tmp_path / "in.npy", ONES)
    result = layerloom("run", "build", "--input", "in.npy", "--output", "y.npz", cwd=tmp_path)
    check_clean_error(result, ["in.npy", "2 inputs", "a, b"])


def test_usage_errors_exit_2_in_two_lines(tmp_path: Path) -> None:
    for args in (["compile", "m.onnx"], ["frobnicate"], []):
        result = layerloom(*args, cwd=tmp_path)
        assert result.returncode == 2 and result.stdout == ""
        assert 1 <= len(result.stderr.strip().splitlines()) <= 2 and "error:" in result.stderr
