// RUN: layerloom-opt %s --split-input-file -p 'assign-engines{arch=seml hw=zcu102 budget=64}' | filecheck %s --check-prefix=SEML
// RUN: layerloom-opt %s --split-input-file -p 'assign-engines{arch=sesl hw=zcu102 budget=64}' | filecheck %s --check-prefix=SESL
// RUN: layerloom-opt %s --split-input-file -p 'assign-engines{arch=hybrid hw="%S/tile_small.hw"}' | filecheck %s --check-prefix=HYBRID

// Arch seml: one engine with the whole budget runs every layer in turn (slots 0, 1, 2, 3).
// Each layer is wrapped in an accel.layer: feature maps come in as operands, the
// layer's weights move inside; the module records the target, arch and budget.
// SEML:      builtin.module attributes {accel.target = "zcu102", accel.arch = "seml", accel.budget = 64 : i64} {
// SEML-NEXT:   accel.engine @seml {kind = "seml", role = "seml", pes = 64 : i64, stage = 0 : i64, target_engine = "seml"}
// SEML-NEXT:   func.func @main(%x: tensor<1x3x8x8xf32>) -> tensor<1x4xf32> {
// SEML-NEXT:     %c = accel.layer @seml(%x) {pes = 64 : i64, slot = 0 : i64} : (tensor<1x3x8x8xf32>) -> tensor<1x8x8x8xf32> {
// SEML-NEXT:     ^bb0(%0: tensor<1x3x8x8xf32>):
// SEML-NEXT:       %w = nn.weight "c1.w" : tensor<8x3x3x3xf32>
// SEML-NEXT:       %c_1 = nn.conv2d %0, %w {name = "c1", {{.*}}activation = "relu"}
// SEML-NEXT:       accel.yield %c_1 : tensor<1x8x8x8xf32>
// SEML-NEXT:     }
// SEML-NEXT:     %g = accel.layer @seml(%c) {pes = 64 : i64, slot = 1 : i64}
// SEML:          nn.global_pool
// SEML:          %f = accel.layer @seml(%g) {pes = 64 : i64, slot = 2 : i64}
// SEML:          nn.reshape
// SEML:          %y = accel.layer @seml(%f) {pes = 64 : i64, slot = 3 : i64}
// SEML-NEXT:     ^bb0(%0: tensor<1x8xf32>):
// SEML-NEXT:       %v = nn.weight "fc.w" : tensor<8x4xf32>
// SEML-NEXT:       %y_1 = nn.gemm %0, %v {name = "fc"
// SEML-NEXT:       accel.yield %y_1 : tensor<1x4xf32>
// SEML-NEXT:     }
// SEML-NEXT:     func.return %y : tensor<1x4xf32>

// Arch sesl: one engine per layer, PEs balanced so that no stage is slower than needed.
// c1 (8 x 27 folded as PE x SIMD over 64 pixels) needs 2 x 27 = 54 PEs to take 256
// cycles, the period 64 PEs allow; the global pool needs 2, fc 1. The reshape does no
// arithmetic: it shares the global pool's engine (slot 1) and takes no PEs.
// SESL:      accel.engine @sesl_0 {kind = "sesl", role = "sesl", pes = 54 : i64, stage = 0 : i64, target_engine = "sesl"}
// SESL-NEXT: accel.engine @sesl_1 {kind = "sesl", role = "sesl", pes = 2 : i64, stage = 1 : i64, target_engine = "sesl"}
// SESL-NEXT: accel.engine @sesl_2 {kind = "sesl", role = "sesl", pes = 1 : i64, stage = 2 : i64, target_engine = "sesl"}
// SESL:      %c = accel.layer @sesl_0(%x) {pes = 54 : i64, slot = 0 : i64}
// SESL:      %g = accel.layer @sesl_1(%c) {pes = 2 : i64, slot = 0 : i64}
// SESL:      %f = accel.layer @sesl_1(%g) {pes = 2 : i64, slot = 1 : i64}
// SESL:      %y = accel.layer @sesl_2(%f) {pes = 1 : i64, slot = 0 : i64}

// HYBRID on the small board (64 KB on chip, 64 PEs): every layer of this model fits on
// a pipeline engine, and the pipeline is the fastest: hybrid with all layers is SESL.
// HYBRID:      accel.arch = "hybrid", accel.budget = 64 : i64
// HYBRID:      accel.engine @sesl_2
// HYBRID-NOT:  accel.engine @seml
// HYBRID:      func.func @main(%x: tensor<1x3x8x8xf32>)
func.func @main(%x: tensor<1x3x8x8xf32>) -> tensor<1x4xf32> {
  %w = nn.weight "c1.w" : tensor<8x3x3x3xf32>
  %c = nn.conv2d %x, %w {name = "c1", strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, activation = "relu"} : (tensor<1x3x8x8xf32>, tensor<8x3x3x3xf32>) -> tensor<1x8x8x8xf32>
  %g = nn.global_pool %c {name = "gap", kind = "avg"} : (tensor<1x8x8x8xf32>) -> tensor<1x8x1x1xf32>
  %f = nn.reshape %g {name = "flat"} : (tensor<1x8x1x1xf32>) -> tensor<1x8xf32>
  %v = nn.weight "fc.w" : tensor<8x4xf32>
  %y = nn.gemm %f, %v {name = "fc", trans_a = 0 : i64, trans_b = 0 : i64, alpha = 1.0 : f64, beta = 1.0 : f64} : (tensor<1x8xf32>, tensor<8x4xf32>) -> tensor<1x4xf32>
  func.return %y : tensor<1x4xf32>
}

// -----

// Arch hybrid: the first conv (3 input channels: few lanes for a reused engine) goes on a
// pipeline engine; the 160 KB fc weights cannot stay on the 64 KB chip, and a pipeline
// engine streaming them from DRAM would hold its 20 KB input and a weight FIFO, both
// doubled (80 KB), so fc runs on the reused engine (its tiles take 18 KB) with the PEs
// the pipeline leaves. The view between them goes with fc.
// HYBRID:      accel.engine @sesl_0 {kind = "sesl", role = "sesl", pes = 4 : i64, stage = 0 : i64, target_engine = "sesl"}
// HYBRID-NEXT: accel.engine @seml {kind = "seml", role = "seml", pes = 60 : i64, stage = 1 : i64, target_engine = "seml"}
// HYBRID:      %c = accel.layer @sesl_0(%x) {pes = 4 : i64, slot = 0 : i64}
// HYBRID:      %f = accel.layer @seml(%c) {pes = 60 : i64, slot = 0 : i64}
// HYBRID:      %y = accel.layer @seml(%f) {pes = 60 : i64, slot = 1 : i64}
func.func @main(%x: tensor<1x3x16x16xf32>) -> tensor<1x8xf32> {
  %w = nn.weight "c1.w" : tensor<20x3x3x3xf32>
  %c = nn.conv2d %x, %w {name = "c1", strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, activation = "relu"} : (tensor<1x3x16x16xf32>, tensor<20x3x3x3xf32>) -> tensor<1x20x16x16xf32>
  %f = nn.reshape %c {name = "flat"} : (tensor<1x20x16x16xf32>) -> tensor<1x5120xf32>
  %v = nn.weight "fc.w" : tensor<5120x8xf32>
  %y = nn.gemm %f, %v {name = "fc", trans_a = 0 : i64, trans_b = 0 : i64, alpha = 1.0 : f64, beta = 1.0 : f64} : (tensor<1x5120xf32>, tensor<5120x8xf32>) -> tensor<1x8xf32>
  func.return %y : tensor<1x8xf32>
}
