"""Bad ONNX input: every case raises a LayerloomError subclass whose text names the file
and the node (or tensor), and unsupported parts are all listed in one report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.defs
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import LayerloomError, ModelError, UnsupportedError, import_onnx
from compiler.onnx_import import MAX_OPSET, TYPE_ONLY_VERSIONS
from tests.test_import import model, node


def saved(m: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    path = folder / name
    onnx.save(m, str(path))
    return path


def raises(error: type[LayerloomError], source: onnx.ModelProto | Path, *needles: str, **kwargs: object) -> str:
    """Import `source`, expect `error`, check that its text holds every needle; return it."""
    with pytest.raises(error) as info:
        import_onnx(source, **kwargs)  # type: ignore[arg-type]
    text = str(info.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


def relu_model() -> onnx.ModelProto:
    return model([node("Relu", ["x"], ["y"])], {"x": [1, 3]}, ["y"])


# ---------------------------------------------------------------------------------------
# The file itself
# ---------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    raises(ModelError, tmp_path / "nope.onnx", "nope.onnx", "file not found")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    raises(ModelError, tmp_path / "empty.onnx", "empty.onnx", "empty file")


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    raises(ModelError, tmp_path, str(tmp_path), "not a file")


@pytest.mark.parametrize("content", [b"hello, this is not a protobuf\n", bytes(range(256)) * 4])
def test_non_onnx_bytes(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "junk.onnx").write_bytes(content)
    raises(ModelError, tmp_path / "junk.onnx", "junk.onnx")


def test_truncated_file(tmp_path: Path) -> None:
    m = model([node("MatMul", ["x", "w"], ["y"])], {"x": [2, 64]}, ["y"], {"w": np.ones((64, 64), np.float32)})
    data = m.SerializeToString()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    raises(ModelError, tmp_path / "cut.onnx", "cut.onnx", "not a readable ONNX model")


@pytest.mark.parametrize("opset", [8, onnx.defs.onnx_opset_version() + 1])
def test_opset_out_of_range(opset: int) -> None:
    m = relu_model()
    m.opset_import[0].version = opset
    raises(UnsupportedError, m, f"opset {opset} not supported", f"9 to {onnx.defs.onnx_opset_version()}")


def test_op_versions_newer_than_22_only_where_just_types_changed() -> None:
    ok = model([node("Reshape", ["x", "s"], ["r"]), node("Relu", ["r"], ["y"])], {"x": [2, 3]}, ["y"], {"s": np.array([3, 2])}, opset=25)
    assert str(import_onnx(ok).output_types[0]) == "tensor<3x2xf32>"  # Reshape-25, Relu-14
    cast = model([helper.make_node("Cast", ["x"], ["y"], name="c", to=TensorProto.FLOAT)], {"x": [2]}, ["y"], opset=24)
    raises(UnsupportedError, cast, "c (Cast): Cast-24 (opset 24) not supported", "up to opset 22")
    old = model([node("HardSwish", ["x"], ["y"], name="hs")], {"x": [2]}, ["y"], opset=9)
    raises(UnsupportedError, old, "hs (HardSwish): not defined in opset 9")
    up = model([node("Upsample", ["x", "s"], ["y"], name="up")], {"x": [1, 1, 2, 2]}, ["y"], {"s": np.ones(4, np.float32)}, opset=10)
    raises(UnsupportedError, up, "up (Upsample): deprecated since version 10")


@pytest.mark.parametrize(("op_type", "version"), [(op, v) for op, vs in TYPE_ONLY_VERSIONS.items() for v in vs])
def test_type_only_versions_change_nothing_but_types(op_type: str, version: int) -> None:
    """The accepted newer versions have the inputs, outputs and attributes of the version
    the importer implements, and allow a superset of its element types."""
    old = onnx.defs.get_schema(op_type, max_inclusive_version=MAX_OPSET, domain="")
    new = onnx.defs.get_schema(op_type, max_inclusive_version=version, domain="")
    assert new.since_version == version

    def form(s: onnx.defs.OpSchema) -> object:
        attrs = {k: (a.type, a.default_value.SerializeToString()) for k, a in s.attributes.items()}
        return [(i.name, i.option) for i in s.inputs], [(o.name, o.option) for o in s.outputs], attrs

    assert form(old) == form(new)
    types = {c.type_param_str: set(c.allowed_type_strs) for c in new.type_constraints}
    for c in old.type_constraints:
        assert set(c.allowed_type_strs) <= types[c.type_param_str]


# ---------------------------------------------------------------------------------------
# Graph structure and consistency
# ---------------------------------------------------------------------------------------


def test_cyclic_graph(tmp_path: Path) -> None:
    m = model([node("Add", ["x", "b"], ["a"], name="first"), node("Relu", ["a"], ["b"], name="second")], {"x": [2]}, ["a"])
    raises(ModelError, saved(m, tmp_path, "cycle.onnx"), "cycle.onnx", "cycle", "first (Add)", "second (Relu)")


def test_undefined_tensor(tmp_path: Path) -> None:
    m = model([node("Add", ["x", "ghost"], ["y"], name="adder")], {"x": [2]}, ["y"])
    raises(ModelError, saved(m, tmp_path), "model.onnx", "adder (Add)", "'ghost' is not defined")


def test_undefined_graph_output() -> None:
    raises(ModelError, model([node("Relu", ["x"], ["y"])], {"x": [2]}, ["z"]), "graph output 'z'")


def test_tensor_defined_twice() -> None:
    m = model([node("Relu", ["x"], ["y"], name="r1"), node("Relu", ["x"], ["y"], name="r2")], {"x": [2]}, ["y"])
    raises(ModelError, m, "r2 (Relu)", "'y' is already defined")


def test_inconsistent_shapes_name_the_node(tmp_path: Path) -> None:
    m = model([node("Add", ["a", "b"], ["y"], name="bad_add")], {"a": [3, 4], "b": [5, 6]}, ["y"])
    raises(ModelError, saved(m, tmp_path), "model.onnx", "bad_add (Add)", "(3, 4) and (5, 6) do not broadcast")


@pytest.mark.parametrize(
    ("nodes", "inputs", "init", "needle"),
    [
        ([node("Conv", ["x", "w"], ["y"], name="n")], {"x": [1, 4, 5, 5]}, {"w": np.ones((2, 3, 3, 3), np.float32)}, "input channels"),
        ([node("Reshape", ["x", "s"], ["y"], name="n")], {"x": [2, 3]}, {"s": np.array([4, -1], np.int64)}, "cannot reshape"),
        ([node("Reshape", ["x", "s"], ["y"], name="n")], {"x": [2, 3]}, {"s": np.array([-1, -1], np.int64)}, "more than one -1"),
        ([node("Squeeze", ["x", "a"], ["y"], name="n")], {"x": [2, 3]}, {"a": np.array([0], np.int64)}, "cannot squeeze"),
        ([node("Concat", ["x", "x2"], ["y"], name="n", axis=0)], {"x": [2, 3], "x2": [2, 4]}, {}, "differ off axis"),
        ([node("Split", ["x"], ["a", "b"], name="n", axis=1)], {"x": [2, 3]}, {}, "equal parts"),
        ([node("Gemm", ["x", "w"], ["y"], name="n")], {"x": [2, 3]}, {"w": np.ones((4, 5), np.float32)}, "inner dimensions"),
        ([node("Transpose", ["x"], ["y"], name="n", perm=[0, 0])], {"x": [2, 3]}, {}, "not a permutation"),
        ([node("Gather", ["s", "i"], ["y"], name="n")], {}, {"s": np.arange(3), "i": np.array([5])}, "out of range"),
        ([node("Softmax", ["x"], ["y"], name="n", axis=4)], {"x": [2, 3]}, {}, "axis 4 out of range"),
        ([node("MaxPool", ["x"], ["y"], name="n", kernel_shape=[2, 2], pads=[2, 2, 2, 2])], {"x": [1, 1, 5, 5]}, {}, "smaller than the kernel"),
        ([node("Conv", ["x", "w"], ["y"], name="n", pads=[0, 0, 0, 2**33])], {"x": [1, 1, 5, 5]},
         {"w": np.ones((1, 1, 3, 3), np.float32)}, "the output has an absurd size"),
        ([node("Concat", ["x", "x"], ["y"], name="n", axis=0)], {"x": [2**30 + 1]}, {}, "the output has an absurd size"),
    ],
)
def test_inconsistent_nodes(nodes: list[onnx.NodeProto], inputs: dict, init: dict, needle: str) -> None:
    raises(ModelError, model(nodes, inputs, ["y"] if "y" in nodes[0].output else ["a"], init), "n (", needle)


def test_attributes_of_the_wrong_type_or_undefined_are_listed() -> None:
    """What the ONNX checker rejects in attributes is reported per node, before any converter
    reads them (a kernel_shape given as one int made the window check fail with a TypeError)."""
    pool = node("MaxPool", ["x"], ["p"], name="pool")
    pool.attribute.append(helper.make_attribute("kernel_shape", 2))
    m = model([pool, node("Relu", ["p"], ["y"], name="act", alpha=0.5)], {"x": [1, 1, 4, 4]}, ["y"])
    raises(UnsupportedError, m, "2 unsupported nodes", "pool (MaxPool): attribute 'kernel_shape' is INT, MaxPool defines it as INTS",
           "act (Relu): attribute 'alpha' is not defined for Relu in opset")


def test_element_types_must_agree() -> None:
    m = model([node("Add", ["x", "c"], ["y"], name="mixed")], {"x": [2]}, ["y"], {"c": np.ones(2, np.float64)})
    raises(ModelError, m, "mixed (Add)", "element types differ")


# ---------------------------------------------------------------------------------------
# Unsupported parts: one report listing all of them
# ---------------------------------------------------------------------------------------


def test_every_unsupported_node_is_listed_at_once(tmp_path: Path) -> None:
    w3d = np.ones((1, 1, 1, 1, 1), np.float32)
    nodes = [
        node("LSTM", ["x"], ["l"], name="lstm1", hidden_size=2),
        node("Resize", ["x", "", "s"], ["r"], name="up", coordinate_transformation_mode="tf_half_pixel_for_nn"),
        node("Conv", ["x5", "w3d"], ["c"], name="conv3d", kernel_shape=[1, 1, 1]),
        node("MaxPool", ["x"], ["mp", "idx"], name="pool", kernel_shape=[1, 1]),
        node("BatchNormalization", ["x", "bn", "bn", "bn", "bn"], ["bnout", "rmean"], name="bn_train"),
        node("Reshape", ["x", "shape_in"], ["rs"], name="dyn_reshape"),
        node("Relu", ["x"], ["fine"], name="fine"),
        helper.make_node("Gelu", ["x"], ["g"], name="custom", domain="com.example"),
        node("Resize", ["x", "fine", "s"], ["r2"], name="tf", coordinate_transformation_mode="tf_crop_and_resize"),
        node("Resize", ["x", "", "s"], ["r3"], name="aa", mode="linear", exclude_outside=1, keep_aspect_ratio_policy="wider"),
    ]
    init = {
        "s": np.ones(4, np.float32),
        "w3d": w3d,
        "bn": np.ones(1, np.float32),
    }
    outputs = ["l", "r", "c", "mp", "idx", "bnout", "rmean", "rs", "fine", "g", "r2", "r3"]
    m = model(nodes, {"x": [1, 1, 2, 2], "x5": [1, 1, 1, 1, 1], "shape_in": [2]}, outputs, init, opset=18)
    m.graph.input[2].type.tensor_type.elem_type = TensorProto.INT64
    text = raises(UnsupportedError, saved(m, tmp_path), "9 unsupported nodes in model.onnx: ")
    for needle in [
        "lstm1 (LSTM): op not supported",
        "up (Resize): coordinate_transformation_mode tf_half_pixel_for_nn not supported",
        "conv3d (Conv): 3-D convolution not supported",
        "pool (MaxPool): Indices output not supported",
        "bn_train (BatchNormalization): training outputs",
        "dyn_reshape (Reshape): input 'shape' must be a constant",
        "custom (Gelu): domain 'com.example' not supported",
        "tf (Resize): input 'roi' must be a constant (computed tensors are not supported there)",
        "aa (Resize): exclude_outside with mode linear without antialias not supported, keep_aspect_ratio_policy wider not supported",
    ]:
        assert needle in text
    assert "fine" not in text


def test_unused_optional_outputs_are_fine() -> None:
    m = model([node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2]), node("Dropout", ["y"], ["z", "mask"])], {"x": [1, 1, 4, 4]}, ["z"])
    import_onnx(m)


def test_training_mode_dropout_is_refused_unless_ratio_is_zero() -> None:
    m = model([node("Dropout", ["x", "", "t"], ["y"], name="d")], {"x": [2]}, ["y"], {"t": np.array(True)})
    raises(UnsupportedError, m, "d (Dropout): training_mode true with ratio 0.5 not supported (random")
    m = model([node("Dropout", ["x", "r", "t"], ["y"], name="d")], {"x": [2]}, ["y"], {"t": np.array(True), "r": np.array(0.0, np.float32)})
    assert [op.name for op in import_onnx(m).main.body.ops][-2:] == ["nn.identity", "func.return"]


def test_dropout_mask_before_opset_10_is_refused() -> None:
    m = model([node("Dropout", ["x"], ["y", "mask"], name="d")], {"x": [2]}, ["y", "mask"], opset=9)
    raises(UnsupportedError, m, "d (Dropout): mask output before opset 10 not supported")


def test_batchnorm_training_mode_is_refused() -> None:
    params = {k: np.ones(2, np.float32) for k in "sbmv"}
    m = model([node("BatchNormalization", list("xsbmv"), ["y"], name="bn", training_mode=1)], {"x": [1, 2, 2]}, ["y"], params, opset=15)
    raises(UnsupportedError, m, "bn (BatchNormalization): training_mode not supported")


def test_cast_of_computed_tensor_to_another_type_is_refused() -> None:
    m = model([helper.make_node("Cast", ["x"], ["y"], name="to_int", to=TensorProto.INT32)], {"x": [2]}, ["y"])
    raises(UnsupportedError, m, "to_int (Cast): cast of a computed tensor")


def test_3d_conv_found_from_the_input_rank() -> None:
    m = model([node("Conv", ["x", "w"], ["y"], name="c3")], {"x": [1, 1, 2, 2, 2]}, ["y"], {"w": np.ones((1, 1, 1, 1, 1), np.float32)})
    raises(UnsupportedError, m, "c3 (Conv): 3-D convolution not supported")


@pytest.mark.parametrize("elem", [TensorProto.BFLOAT16, TensorProto.STRING, TensorProto.COMPLEX64])
def test_unsupported_element_types_name_the_tensor(elem: int) -> None:
    m = model([node("Relu", ["x"], ["y"])], {"x": [2]}, ["y"], elem=elem)
    raises(UnsupportedError, m, "x (graph input): element type", TensorProto.DataType.Name(elem))


def test_unsupported_initializer_type() -> None:
    m = model([node("Identity", ["s"], ["y"])], {}, ["y"])
    m.graph.initializer.append(helper.make_tensor("s", TensorProto.STRING, [1], [b"a"]))
    raises(UnsupportedError, m, "s (initializer): element type STRING not supported")


def test_unsupported_constant_forms() -> None:
    m = model([helper.make_node("Constant", [], ["y"], name="k", value_string="hi")], {}, ["y"])
    raises(UnsupportedError, m, "k (Constant): value_string not supported")


# ---------------------------------------------------------------------------------------
# Tensors: sizes and external data
# ---------------------------------------------------------------------------------------


def test_constant_of_shape_with_absurd_size() -> None:
    m = model(
        [helper.make_node("ConstantOfShape", ["s"], ["y"], name="huge")], {}, ["y"], {"s": np.array([2**20, 2**20], np.int64)}
    )
    raises(ModelError, m, "huge (ConstantOfShape)", "absurd size")


def test_initializer_declaring_more_than_it_holds() -> None:
    m = relu_model()
    t = numpy_helper.from_array(np.ones(4, np.float32), "w")
    t.dims[:] = [1000]
    m.graph.initializer.append(t)
    raises(ModelError, m, "initializer 'w'", "(4000 bytes) but holds 16 bytes")


def test_initializer_with_absurd_shape() -> None:
    m = relu_model()
    t = numpy_helper.from_array(np.ones(4, np.float32), "w")
    t.dims[:] = [2**16, 2**16]
    m.graph.initializer.append(t)
    raises(ModelError, m, "initializer 'w'", "absurd size")


def external_model(tmp_path: Path, location: str) -> Path:
    """A model whose weight points at `location` (the data file is written in tmp_path)."""
    w = np.arange(16, dtype=np.float32)
    m = model([node("Add", ["x", "w"], ["y"])], {"x": [16]}, ["y"], {"w": w})
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "w.bin").write_bytes(w.tobytes())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    return saved(m, model_dir)


def test_external_data_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    raises(ModelError, external_model(tmp_path, "../w.bin"), "model.onnx", "initializer 'w'", "leaves the model's folder")


def test_external_data_with_an_absolute_path_is_refused(tmp_path: Path) -> None:
    raises(ModelError, external_model(tmp_path, str(tmp_path / "w.bin")), "initializer 'w'", "absolute")


def test_external_data_missing_or_short(tmp_path: Path) -> None:
    path = external_model(tmp_path, "inside.bin")
    raises(ModelError, path, "external data file 'inside.bin' not found")
    (path.parent / "inside.bin").write_bytes(b"\0" * 10)
    raises(ModelError, path, "initializer 'w'", "(64 bytes) but 'inside.bin' holds 10 bytes")
    (path.parent / "inside.bin").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    import_onnx(path)


def test_external_data_in_an_in_memory_model(tmp_path: Path) -> None:
    m = onnx.load(str(external_model(tmp_path, "w.bin")), load_external_data=False)
    raises(ModelError, m, "initializer 'w'", "in-memory model")


# ---------------------------------------------------------------------------------------
# input_shapes
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shapes", "needle"),
    [
        ({"nope": [1, 3]}, "'nope', which is not a graph input"),
        ({"w": [3]}, "'w', which is an initializer"),
        ({"x": [1, 3, 1]}, "rank 2"),
        ({"x": [1, 4]}, "static dim 3 at axis 1"),
        ({"x": [0, 3]}, "non-positive"),
    ],
)
def test_bad_input_shapes(tmp_path: Path, shapes: dict, needle: str) -> None:
    m = model([node("Add", ["x", "w"], ["y"])], {"x": ["n", 3]}, ["y"], {"w": np.ones(3, np.float32)})
    raises(ModelError, saved(m, tmp_path), "model.onnx", needle, input_shapes=shapes)


def test_input_without_shape_needs_input_shapes() -> None:
    m = relu_model()
    m.graph.input[0].type.tensor_type.ClearField("shape")
    raises(ModelError, m, "input 'x' has no shape")
    assert import_onnx(m, {"x": [2, 2]}).input_types[0].get_shape() == (2, 2)


def test_errors_are_layerloom_errors_with_a_location(tmp_path: Path) -> None:
    with pytest.raises(LayerloomError) as info:
        import_onnx(tmp_path / "missing.onnx")
    assert info.value.where == str(tmp_path / "missing.onnx")


def reshape_by_input() -> onnx.ModelProto:
    m = model([node("Reshape", ["x", "shape"], ["y"], name="rs")], {"x": ["n", 3], "shape": [2]}, ["y"], {"w": np.ones(3, np.float32)})
    m.graph.input[1].type.tensor_type.elem_type = TensorProto.INT64
    return m


@pytest.mark.parametrize(
    ("constants", "error", "needle"),
    [
        ({"nope": np.ones(2)}, ModelError, "constants names 'nope', which is not a graph input"),
        ({"w": np.ones(3, np.float32)}, ModelError, "'w', which is an initializer"),
        ({"shape": np.array([3, 2], np.int32)}, ModelError, "constants gives 'shape' as int32, the input is int64"),
        ({"shape": np.array([3, 1, 2])}, ModelError, "constants gives 'shape' shape [3], the input has [2]"),
        ({"x": np.ones((2, 3, 1), np.float32), "shape": np.array([3, 2])}, ModelError, "shape [2, 3, 1], the input has ['?', 3]"),
        ({}, UnsupportedError, "rs (Reshape): input 'shape' must be a constant, but it is the graph input 'shape' (give its value with constants=)"),
    ],
)
def test_bad_constants(constants: dict, error: type[LayerloomError], needle: str) -> None:
    raises(error, reshape_by_input(), needle, constants=constants)


def test_input_shapes_cannot_name_a_constant() -> None:
    raises(ModelError, reshape_by_input(), "'shape', which is an initializer or a value given in constants", input_shapes={"shape": [2]}, constants={"shape": np.array([3, -1])})


def test_pool_with_same_padding_and_dilations_is_refused() -> None:
    m = model([node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2], dilations=[2, 2], auto_pad="SAME_UPPER")], {"x": [1, 1, 7, 7]}, ["y"], opset=19)
    raises(UnsupportedError, m, "mp (MaxPool): auto_pad SAME_UPPER with dilations > 1 not supported")


def test_pool_with_same_padding_that_would_be_negative_is_refused() -> None:
    m = model([node("AveragePool", ["x"], ["y"], name="ap", kernel_shape=[1, 1], strides=[3, 3], auto_pad="SAME_UPPER")], {"x": [1, 1, 6, 6]}, ["y"], opset=19)
    raises(UnsupportedError, m, "ap (AveragePool): auto_pad SAME_UPPER that needs negative padding (stride 3 over a window of 1) not supported")


@pytest.mark.parametrize("op_type", ["MaxPool", "Conv"])
def test_auto_pad_together_with_pads_is_refused(op_type: str) -> None:
    """Found by a differential fuzz: the two disagree (onnxruntime refuses a Conv with both and
    lets a pool's auto_pad win), so neither is guessed. VALID with zero pads says one thing twice."""
    inputs, init = (["x", "w"], {"w": np.ones((1, 1, 3, 3), np.float32)}) if op_type == "Conv" else (["x"], {})
    both = model([node(op_type, inputs, ["y"], name="p", kernel_shape=[3, 3], auto_pad="SAME_LOWER", pads=[1, 1, 1, 1])],
                 {"x": [1, 1, 5, 5]}, ["y"], init, opset=19)
    raises(UnsupportedError, both, f"p ({op_type}): auto_pad SAME_LOWER together with pads [1, 1, 1, 1]")
    agreeing = model([node(op_type, inputs, ["y"], name="p", kernel_shape=[3, 3], auto_pad="VALID", pads=[0, 0, 0, 0])],
                     {"x": [1, 1, 5, 5]}, ["y"], init, opset=19)
    assert import_onnx(agreeing).main is not None
