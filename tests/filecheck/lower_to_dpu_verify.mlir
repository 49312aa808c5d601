// RUN: layerloom-opt %s --split-input-file --verify-diagnostics | filecheck %s

// The dpu dialect's verifiers: every instruction's fields against the ISA table
// (backends/dpu/isa.py), the program's shape (layers, then dpu.end) and its dependency
// tokens (docs/isa.md section 6), dpu.run against the program's interface.

// CHECK: dpu.convinit: kernel_h = 0 is out of range 1..16
"dpu.convinit"() <{kernel_h = 0 : i64, kernel_w = 3 : i64}> : () -> ()

// -----

// CHECK: dpu.conv: CONV needs fields bank_in, addr_in, bank_out, addr_out, addr_w, addr_bias, out_rows, out_cols, ic, oc
"dpu.conv"() : () -> ()

// -----

// CHECK: dpu.save: reg is one of weights, work, input, output, r4, r5, r6, r7; not 'ddr'
"dpu.save"() <{bank = 0 : i64, addr = 0 : i64, reg = "ddr", offset = 0 : i64, rows = 1 : i64, cols = 1 : i64, chans = 1 : i64, row_stride = 0 : i64, col_stride = 0 : i64}> : () -> ()

// -----

// CHECK: dpu.program @dpu: the body must end with dpu.end
dpu.program @dpu attributes {hw = "zcu102-dpu", arch = "B4096", pp = 8 : i64, icp = 16 : i64, ocp = 16 : i64, bank_num = 8 : i64, bank_depth = 2048 : i64, cores = 1 : i64, weights = 0 : i64, work = 0 : i64, inputs = [], outputs = []} {
  dpu.layer "a" {
    dpu.convinit kernel_h=1 kernel_w=1
  }
}

// -----

// A CONV that signals load, with no LOAD after it to take the token.
// CHECK: dpu.program @dpu: 1 token on compute->load never waited for (first: instruction 1, CONV)
dpu.program @dpu attributes {hw = "zcu102-dpu", arch = "B4096", pp = 8 : i64, icp = 16 : i64, ocp = 16 : i64, bank_num = 8 : i64, bank_depth = 2048 : i64, cores = 1 : i64, weights = 0 : i64, work = 0 : i64, inputs = [], outputs = []} {
  dpu.layer "a" {
    dpu.convinit kernel_h=1 kernel_w=1
    dpu.conv signal=load bank_in=0 addr_in=0x0 bank_out=1 addr_out=0x0 addr_w=0x0 addr_bias=0x0 out_rows=1 out_cols=1 ic=1 oc=1
  }
  dpu.end
}

// -----

// CHECK: dpu.program @dpu: layer names must be unique
dpu.program @dpu attributes {hw = "zcu102-dpu", arch = "B4096", pp = 8 : i64, icp = 16 : i64, ocp = 16 : i64, bank_num = 8 : i64, bank_depth = 2048 : i64, cores = 1 : i64, weights = 0 : i64, work = 0 : i64, inputs = [], outputs = []} {
  dpu.layer "a" {
    dpu.convinit kernel_h=1 kernel_w=1
  }
  dpu.layer "a" {
    dpu.convinit kernel_h=3 kernel_w=3
  }
  dpu.end
}

// -----

// CHECK: dpu.layer "a" holds instructions other than END, not dpu.end
dpu.program @dpu attributes {hw = "zcu102-dpu", arch = "B4096", pp = 8 : i64, icp = 16 : i64, ocp = 16 : i64, bank_num = 8 : i64, bank_depth = 2048 : i64, cores = 1 : i64, weights = 0 : i64, work = 0 : i64, inputs = [], outputs = []} {
  dpu.layer "a" {
    dpu.end
  }
  dpu.end
}

// -----

// CHECK: dpu.run: a tensor of shape (1, 3, 4, 4) is not the 4x4x2 feature map
dpu.program @dpu attributes {hw = "zcu102-dpu", arch = "B4096", pp = 8 : i64, icp = 16 : i64, ocp = 16 : i64, bank_num = 8 : i64, bank_depth = 2048 : i64, cores = 1 : i64, weights = 16 : i64, work = 0 : i64, inputs = [{reg = "input", offset = 0 : i64, shape = array<i64: 4, 4, 2>, strides = array<i64: 8, 2>, scale = 1.0 : f64}], outputs = []} {
  dpu.end
}
func.func @main(%x: tensor<1x3x4x4xi8>, %w: tensor<16xui8>) {
  dpu.run @dpu(%x, %w) : (tensor<1x3x4x4xi8>, tensor<16xui8>) -> ()
  func.return
}

// -----

// CHECK: dpu.run: the weights region has 16 bytes, the operand is (8,)
dpu.program @dpu attributes {hw = "zcu102-dpu", arch = "B4096", pp = 8 : i64, icp = 16 : i64, ocp = 16 : i64, bank_num = 8 : i64, bank_depth = 2048 : i64, cores = 1 : i64, weights = 16 : i64, work = 0 : i64, inputs = [], outputs = []} {
  dpu.end
}
func.func @main(%w: tensor<8xui8>) {
  dpu.run @dpu(%w) : (tensor<8xui8>) -> ()
  func.return
}

