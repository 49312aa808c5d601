"""The DPU backend: an open DPU-like instruction set (docs/isa.md).

- `isa`: the instruction table (opcodes, fields, bit positions), `Instruction`, the
  static dependency-token rules, the B512 ... B4096 configurations;
- `encoding`: `encode(program) -> bytes`, `decode(bytes) -> program`;
- `assembler`: `assemble(text) -> program`, `disassemble(program) -> text`.
"""

from backends.dpu.assembler import assemble, disassemble
from backends.dpu.encoding import decode, encode
from backends.dpu.isa import OPCODES, DpuConfig, Instruction, tokens

__all__ = ["OPCODES", "DpuConfig", "Instruction", "assemble", "decode", "disassemble", "encode", "tokens"]
