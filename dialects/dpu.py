"""The `dpu` dialect: DPU programs, one op per instruction (docs/isa.md).

The target level of the DPU backend. A `dpu.program` is one core's instruction stream
(every core runs the same one on its own frame) together with its interface: the
configuration it was compiled for, the sizes of its DDR regions and where in DDR its
input and output feature maps live. Its body holds `dpu.layer` groups of instructions
and ends with `dpu.end`:

    dpu.program @dpu {hw = "zcu102-dpu", arch = "B4096", pp = 8 : i64, ...} {
      dpu.layer "conv1" {
        dpu.convinit kernel_h=3 kernel_w=3 act=relu
        dpu.load mem=weights addr=0x0 reg=weights offset=0x0 rows=1 cols=36 chans=256 row_stride=0 col_stride=256
        dpu.conv wait=load signal=save bank_in=0 addr_in=0x0 bank_out=2 ...
        dpu.save wait=compute bank=2 addr=0x0 reg=work offset=0x0 ...
      }
      dpu.end
    }

The instruction ops are made from the ISA table (`backends/dpu/isa.py`): one op class per
mnemonic, one optional property per field, and the custom syntax is the assembly's
`field=value` operands (defaults left out, the same canonical text as `disassemble`).
Verifiers check every field against the table (range, choice, queue set), and the
program the static token rules (`isa.tokens`). `dpu.run` calls a program from the host
function: its operands are the program's input feature maps (int8, NCHW as in the
quantized IR) and the weights region (`nn.weight` of ui8), its results the output maps.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    IntegerAttr,
    StringAttr,
    SymbolNameConstraint,
    SymbolRefAttr,
    TensorType,
)
from xdsl.ir import Attribute, Dialect, Region
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    region_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import NoTerminator, SymbolOpInterface, SymbolTable
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.mlir_lexer import MLIRTokenKind

from backends.dpu.isa import OPCODES, Choice, Field, FieldError, Instruction, Opcode, QueueSet, Value, tokens
from compiler.errors import LayerloomError
from dialects.nn import i64attr, int_list, ints, shape_of

# ---------------------------------------------------------------------------------------
# Instructions: one op class per mnemonic, generated from the ISA table
# ---------------------------------------------------------------------------------------


_ATTRS: dict[tuple[int, Value], Attribute] = {}  # building an attribute is slow; a program repeats most operands
_VALUES: dict[tuple[int, int], tuple[Attribute, Value]] = {}  # (field, attribute) ids -> the value field_attr made it of


def field_attr(f: Field, value: Value) -> Attribute:
    """A field value as a property: i64 for numbers, the name for a choice, queue names
    joined by '|' for a queue set."""
    key = (id(f), value)  # fields are the ISA table's: they live as long as the process
    attr = _ATTRS.get(key)
    if attr is None:
        if isinstance(f, QueueSet | Choice):
            attr = StringAttr(f.format(value))
        else:
            assert isinstance(value, int)
            attr = i64attr(value)
        _ATTRS[key] = attr
        _VALUES[(id(f), id(attr))] = (attr, value)
    return attr


def field_value(f: Field, attr: Attribute) -> Value:
    """The inverse of `field_attr` (unchecked: `Field.check` does that). The attributes
    `field_attr` made (the parser's too) map back without looking inside."""
    made = _VALUES.get((id(f), id(attr)))
    if made is not None and made[0] is attr:
        return made[1]
    if isinstance(f, QueueSet):
        text = attr.data if isinstance(attr, StringAttr) else ""
        return frozenset() if text in ("", "none") else frozenset(text.split("|"))
    if isinstance(f, Choice):
        return attr.data if isinstance(attr, StringAttr) else repr(attr)
    if isinstance(attr, IntegerAttr):
        return int(attr.value.data)
    raise FieldError(f"{f.name} takes a number, not {attr}")


def checked_value(f: Field, attr: Attribute) -> Value:
    """`field_value`, checked against the field's range or choices (FieldError)."""
    value = field_value(f, attr)
    f.check(value)
    return value


class InstructionOp(IRDLOperation):
    """One DPU instruction. `SPEC` is its row of the ISA table; each field is an optional
    property (absent: the field's default)."""

    SPEC: ClassVar[Opcode]

    @classmethod
    def of(cls, ins: Instruction) -> InstructionOp:
        """The op of an instruction (only fields that differ from their default)."""
        op_class = INSTRUCTION_OPS[ins.mnemonic]
        spec = op_class.SPEC
        props = {f.name: field_attr(f, ins.fields[f.name]) for f in spec.fields if ins.fields[f.name] != f.default}
        return op_class.build(properties=props)

    def values(self) -> dict[str, Value]:
        return {name: field_value(self.SPEC.by_name[name], a) for name, a in self.properties.items()}

    def instruction(self) -> Instruction:
        """The checked instruction (LayerloomError naming the bad field)."""
        spec = self.SPEC
        try:
            values = {name: checked_value(spec.by_name[name], a) for name, a in self.properties.items()}
            if not _required(spec) <= values.keys():
                spec.build(values)  # raises, naming the missing fields
        except FieldError as e:
            raise LayerloomError(str(e), self.name) from None
        return Instruction(spec.mnemonic, _defaults(spec) | values)

    def verified_instruction(self) -> Instruction:
        """The instruction of an op that verified (no checks: a program's thousands of
        instructions convert fast, most attributes through field_attr's table), kept on
        the op while its properties stay the same (a program runs again and again)."""
        kept = self.__dict__.get("_kept_instruction")
        if kept is not None and kept[0] == self.properties:
            return kept[1]
        ins = Instruction(self.SPEC.mnemonic, _defaults(self.SPEC) | self.values())
        self.__dict__["_kept_instruction"] = (dict(self.properties), ins)
        return ins

    def verify_(self) -> None:
        try:
            self.instruction()
        except LayerloomError as e:
            raise VerifyException(f"{self.name}: {e.message}") from None

    @classmethod
    def parse(cls, parser: Parser) -> InstructionOp:
        """`field=value` operands, as in assembly (`wait=load|save act=relu addr=0x40`)."""
        props: dict[str, Attribute] = {}
        while (name := parser.parse_optional_keyword_in(cls.SPEC.by_name)) is not None:
            parser.parse_punctuation("=")
            if name in props:
                parser.raise_error(f"field '{name}' given twice")
            f = cls.SPEC.by_name[name]
            value: Value
            number = parser.parse_optional_integer(allow_boolean=False)
            if number is not None:
                value = number
            else:
                names = [parser.parse_identifier(f"a value for {name}")]
                while parser.parse_optional_punctuation("|") is not None:
                    names.append(parser.parse_identifier(f"a queue name for {name}"))
                value = field_value(f, StringAttr("|".join(names))) if isinstance(f, QueueSet) else names[0]
            try:
                f.check(value)
            except FieldError as e:
                parser.raise_error(str(e))
            props[name] = field_attr(f, value)
        # The next op's name is an identifier too, but never without a dot like a field's.
        token = parser._current_token  # noqa: SLF001 -- xDSL has no public one-token lookahead
        if token.kind == MLIRTokenKind.BARE_IDENT and "." not in token.text:
            close = difflib.get_close_matches(token.text, list(cls.SPEC.by_name), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            parser.raise_error(f"{cls.SPEC.mnemonic} has no field '{token.text}'{hint}")
        op = cls.build(properties=props)
        extra = parser.parse_optional_attr_dict()
        op.attributes.update(extra)
        return op

    def print(self, printer: Printer) -> None:
        values = {name: field_value(self.SPEC.by_name[name], a) for name, a in self.properties.items()}
        for f in self.SPEC.fields:
            if f.name in values and values[f.name] != f.default:
                printer.print_string(f" {f.name}={f.format(values[f.name])}")
        if self.attributes:
            printer.print_op_attributes(self.attributes)


def _defaults(spec: Opcode) -> dict[str, Value]:
    return _DEFAULTS[spec.mnemonic]


_DEFAULTS = {m: {f.name: f.default for f in spec.fields if f.default is not None} for m, spec in OPCODES.items()}


def _required(spec: Opcode) -> frozenset[str]:
    return _REQUIRED[spec.mnemonic]


_REQUIRED = {m: frozenset(spec.required) for m, spec in OPCODES.items()}


def _instruction_op(spec: Opcode) -> type[InstructionOp]:
    """The op class of one row of the ISA table: `dpu.<mnemonic>`, a property per field."""
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": f"{spec.mnemonic}: {spec.summary} (docs/isa.md section 8).",
        "name": f"dpu.{spec.mnemonic.lower()}",
        "irdl_options": (ParsePropInAttrDict(),),
        "SPEC": spec,
        "__annotations__": {"SPEC": "ClassVar[Opcode]"},
        # Python names get a prefix: fields such as `offset` or `op` must not shadow Operation's.
        **{f"field_{f.name}": opt_prop_def(Attribute, prop_name=f.name) for f in spec.fields},
    }
    return irdl_op_definition(type(f"{spec.mnemonic.capitalize()}Op", (InstructionOp,), namespace))


INSTRUCTION_OPS: dict[str, type[InstructionOp]] = {m: _instruction_op(spec) for m, spec in OPCODES.items()}
EndOp = INSTRUCTION_OPS["END"]


# ---------------------------------------------------------------------------------------
# Structure: program, layer, run
# ---------------------------------------------------------------------------------------

CONFIG_FIELDS = ("pp", "icp", "ocp", "bank_num", "bank_depth", "cores")
MAP_KEYS = ("reg", "offset", "shape", "strides", "scale")


def feature_map_attr(reg: str, offset: int, shape: Sequence[int], strides: Sequence[int], scale: float) -> DictionaryAttr:
    """A feature map in DDR as the program's interface lists it: base register, offset,
    (h, w, c), (row stride, column stride) in bytes and the int8 scale."""
    from dialects.nn import f64attr

    return DictionaryAttr({"reg": StringAttr(reg), "offset": i64attr(offset), "shape": ints(list(shape)),
                           "strides": ints(list(strides)), "scale": f64attr(scale)})


def feature_map_fields(attr: Attribute) -> dict[str, Any]:
    """{reg, offset, shape, strides, scale} of a feature-map dictionary (VerifyException if malformed)."""
    if not isinstance(attr, DictionaryAttr) or set(attr.data) != set(MAP_KEYS):
        raise VerifyException(f"a feature map is a dictionary of {', '.join(MAP_KEYS)}, not {attr}")
    d = attr.data
    try:
        shape, strides = list(int_list(d["shape"])), list(int_list(d["strides"]))  # type: ignore[arg-type]
        fields = {"reg": d["reg"].data, "offset": int(d["offset"].value.data), "shape": shape,  # type: ignore[attr-defined]
                  "strides": strides, "scale": float(d["scale"].value.data)}  # type: ignore[attr-defined]
    except (AttributeError, TypeError) as e:
        raise VerifyException(f"malformed feature map {attr}: {e}") from None
    if len(shape) != 3 or min(shape) < 1 or len(strides) != 2 or min(strides) < 0 or fields["offset"] < 0:
        raise VerifyException(f"a feature map has a positive (h, w, c) and non-negative strides and offset: {attr}")
    return fields


@irdl_op_definition
class LayerOp(IRDLOperation):
    """The instructions of one layer of the source program (per-layer cycles and reports
    group by it). Optional attributes record what the lowering chose (`kind`, `tile`)."""

    name = "dpu.layer"
    assembly_format = "$layer_name attr-dict-with-keyword $body"
    traits = traits_def(NoTerminator())

    layer_name = prop_def(StringAttr)
    body = region_def()  # no block for a layer without instructions (a view, a placed concat)

    def instruction_ops(self) -> Iterator[InstructionOp]:
        for block in self.body.blocks:
            for op in block.ops:
                assert isinstance(op, InstructionOp)
                yield op

    def verify_(self) -> None:
        if len(self.body.blocks) > 1:
            raise VerifyException(f"dpu.layer \"{self.layer_name.data}\" has more than one block")
        for op in (o for block in self.body.blocks for o in block.ops):
            if not isinstance(op, InstructionOp) or isinstance(op, EndOp):
                raise VerifyException(f"dpu.layer \"{self.layer_name.data}\" holds instructions other than END, "
                                      f"not {op.name}")


@irdl_op_definition
class ProgramOp(IRDLOperation):
    """One DPU core's program: `dpu.layer`s, then `dpu.end`. Properties: the target
    description (`hw`) and configuration it was compiled for, the bytes of its `weights`
    and `work` regions, and its `inputs` / `outputs` feature maps (`feature_map_attr`)."""

    name = "dpu.program"
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$sym_name attr-dict-with-keyword $body"
    traits = traits_def(SymbolOpInterface(), NoTerminator())

    sym_name = prop_def(SymbolNameConstraint())
    hw = prop_def(StringAttr)
    arch = prop_def(StringAttr)
    pp = prop_def(IntegerAttr)
    icp = prop_def(IntegerAttr)
    ocp = prop_def(IntegerAttr)
    bank_num = prop_def(IntegerAttr)
    bank_depth = prop_def(IntegerAttr)
    cores = prop_def(IntegerAttr)
    weights = prop_def(IntegerAttr)
    work = prop_def(IntegerAttr)
    inputs = prop_def(ArrayAttr)
    outputs = prop_def(ArrayAttr)
    body = region_def("single_block")

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            raise VerifyException(f"dpu.program @{self.sym_name.data}: {message}")

    def config(self) -> Any:
        """The `DpuConfig` it was compiled for."""
        from backends.dpu.isa import DpuConfig

        values = {k: int(getattr(self, k).value.data) for k in CONFIG_FIELDS}
        return DpuConfig(self.arch.data, **values)

    def layer_ops(self) -> list[LayerOp]:
        return [op for op in self.body.block.ops if isinstance(op, LayerOp)]

    def instructions(self, checked: bool = False) -> tuple[list[Instruction], list[str]]:
        """The instruction stream (END last) and the layer of each instruction; `checked`
        checks every field (the verifier does; a verified program need not)."""
        program: list[Instruction] = []
        layers: list[str] = []
        for op in self.body.block.ops:
            ops, name = (list(op.instruction_ops()), op.layer_name.data) if isinstance(op, LayerOp) else ([op], "")
            for ins in ops:
                assert isinstance(ins, InstructionOp)
                program.append(ins.instruction() if checked else ins.verified_instruction())
                layers.append(name)
        return program, layers

    def input_maps(self) -> list[dict[str, Any]]:
        return [feature_map_fields(a) for a in self.inputs.data]

    def output_maps(self) -> list[dict[str, Any]]:
        return [feature_map_fields(a) for a in self.outputs.data]

    def verify_(self) -> None:
        self.check(all(int(getattr(self, k).value.data) >= 1 for k in CONFIG_FIELDS), "configuration values must be positive")
        self.check(int(self.weights.value.data) >= 0 and int(self.work.value.data) >= 0, "region sizes must not be negative")
        ops = list(self.body.block.ops)
        self.check(bool(ops) and isinstance(ops[-1], EndOp), "the body must end with dpu.end")
        for op in ops[:-1]:
            self.check(isinstance(op, LayerOp), f"holds dpu.layer ops and a final dpu.end, not {op.name}")
        names = [op.layer_name.data for op in ops[:-1] if isinstance(op, LayerOp)]
        self.check(len(set(names)) == len(names), "layer names must be unique")
        self.input_maps(), self.output_maps()
        try:  # each instruction op checks its own fields
            tokens(self.instructions()[0])
        except LayerloomError as e:
            self.check(False, e.message)


@irdl_op_definition
class RunOp(IRDLOperation):
    """Run a `dpu.program` on the host's int8 feature maps: operands are its inputs (in
    the order of the program's `inputs`) and then the weights region (a tensor of ui8);
    results its outputs (the order of `outputs`). Shapes are the quantized IR's (NCHW,
    or (1, n) for a flattened map); in DDR the maps are HWC (`inputs` / `outputs`)."""

    name = "dpu.run"
    assembly_format = "$program `(` $operands_ `)` attr-dict `:` functional-type($operands_, $results_)"

    program = prop_def(SymbolRefAttr)
    operands_ = var_operand_def(TensorType)
    results_ = var_result_def(TensorType)

    def program_op(self) -> ProgramOp:
        try:
            found = SymbolTable.lookup_symbol(self, self.program)
        except ValueError:
            found = None
        if not isinstance(found, ProgramOp):
            raise VerifyException(f"dpu.run: @{self.program.root_reference.data} is not a dpu.program")
        return found

    def verify_(self) -> None:
        program = self.program_op()
        maps = program.input_maps()
        if len(self.operands_) != len(maps) + 1:
            raise VerifyException(f"dpu.run: @{program.sym_name.data} takes {len(maps)} feature maps and the "
                                  f"weights, got {len(self.operands_)} operands")
        for value, m in zip([*self.operands_[:-1], *self.results_], [*maps, *program.output_maps()], strict=False):
            check_map_shape(shape_of(value), m["shape"])
        weights = shape_of(self.operands_[-1])
        if weights != (int(program.weights.value.data),):
            raise VerifyException(f"dpu.run: the weights region has {program.weights.value.data} bytes, "
                                  f"the operand is {weights}")
        if len(self.results_) != len(program.output_maps()):
            raise VerifyException(f"dpu.run: @{program.sym_name.data} has {len(program.output_maps())} outputs, "
                                  f"got {len(self.results_)} results")


def check_map_shape(shape: Sequence[int], hwc: Sequence[int]) -> None:
    """A host tensor of `shape` is an (h, w, c) map: (1, c, h, w), or (1, n) for n = h*w*c."""
    h, w, c = hwc
    if tuple(shape) not in ((1, c, h, w), (1, h * w * c)):
        raise VerifyException(f"dpu.run: a tensor of shape {tuple(shape)} is not the {h}x{w}x{c} feature map")


def program_region(layers: Sequence[tuple[str, dict[str, Attribute], Sequence[Instruction]]]) -> Region:
    """The body of a dpu.program: a dpu.layer per (name, attributes, instructions), dpu.end."""
    from xdsl.ir import Block

    block = Block()
    for name, attributes, instructions in layers:
        body = Region(Block([InstructionOp.of(i) for i in instructions])) if instructions else Region()
        layer = LayerOp.build(properties={"layer_name": StringAttr(name)}, regions=[body],
                              attributes=dict(attributes))
        block.add_op(layer)
    block.add_op(EndOp.build())
    return Region(block)


DPU = Dialect("dpu", [ProgramOp, LayerOp, RunOp, *INSTRUCTION_OPS.values()])


# The reference executor runs a dpu.run on the instruction-set simulator, so a lowered
# module (host ops around the DPU program) executes like any other. Registered here:
# whatever loads dpu IR can run it.
def _register_kernel() -> None:
    from backends.dpu.runtime import run_kernel
    from backends.reference.kernels import register_kernel

    register_kernel(RunOp, run_kernel)  # type: ignore[arg-type]


_register_kernel()
