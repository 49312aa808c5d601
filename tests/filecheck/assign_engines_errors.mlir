// RUN: not layerloom-opt %s -p 'assign-engines{arch=bogus hw=zcu102}' 2>&1 | filecheck %s --check-prefix=ARCH
// RUN: not layerloom-opt %s -p 'assign-engines{budget=9999 hw=zcu102}' 2>&1 | filecheck %s --check-prefix=BUDGET
// RUN: not layerloom-opt %s -p 'assign-engines{hw=nosuchboard}' 2>&1 | filecheck %s --check-prefix=TARGET
// RUN: not layerloom-opt %s -p 'assign-engines' 2>&1 | filecheck %s --check-prefix=NOHW
// RUN: not layerloom-opt %s -p 'assign-engines{hw=zcu102},assign-engines{hw=zcu102}' 2>&1 | filecheck %s --check-prefix=TWICE
// RUN: not layerloom-opt %s -p 'assign-engines{arch=sesl hw=zcu102-dpu}' 2>&1 | filecheck %s --check-prefix=NOSESL
// RUN: not layerloom-opt %s -p 'assign-engines{arch=sesl hw="%S/tile_small.hw"}' 2>&1 | filecheck %s --check-prefix=NOFIT

// Bad options and impossible requests: one line naming the pass (or the target file).
// ARCH:   layerloom-opt: error: assign-engines: unknown architecture 'bogus' (one of seml, sesl, hybrid)
// BUDGET: layerloom-opt: error: assign-engines: budget 9999 exceeds the pe_budget 2520 of target 'zcu102'
// TARGET: layerloom-opt: error: unknown target 'nosuchboard' (bundled: {{.*}}zcu102{{.*}}; or give a path to a .hw file)
// NOHW:   layerloom-opt: error: assign-engines: no hardware target: give hw=NAME
// TWICE:  layerloom-opt: error: assign-engines: the module is already mapped (assign-engines ran before)
// NOSESL: layerloom-opt: error: {{.*}}zcu102-dpu.hw: target 'zcu102-dpu' has no sesl engine for arch sesl (engines: dpu (dpu))
// The fc's 160 KB of weights cannot live on the 64 KB board, and a pipeline engine that
// streams them from DRAM holds its 20 KB input row and a one-filter weight FIFO, both
// doubled: 80 KB.
// NOFIT:  layerloom-opt: error: {{.*}}tile_small.hw: arch sesl does not fit target 'tile_small': the pipeline's line buffers exceed its 65536 bytes of on-chip memory, even with its weights streamed from DRAM
func.func @main(%x: tensor<1x5120xf32>) -> tensor<1x8xf32> {
  %v = nn.weight "fc.w" : tensor<5120x8xf32>
  %y = nn.gemm %x, %v {name = "fc", trans_a = 0 : i64, trans_b = 0 : i64, alpha = 1.0 : f64, beta = 1.0 : f64} : (tensor<1x5120xf32>, tensor<5120x8xf32>) -> tensor<1x8xf32>
  func.return %y : tensor<1x8xf32>
}
