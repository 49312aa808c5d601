// RUN: layerloom-opt %s --split-input-file -p 'assign-engines{arch=seml hw="%S/tile_small.hw"},tile,plan-memory' | filecheck %s
// RUN: layerloom-opt %s --split-input-file -p 'assign-engines{arch=seml hw="%S/tile_small.hw"},tile,plan-memory{plan=ping-pong}' | filecheck %s --check-prefix=PP
// RUN: layerloom-opt %s --split-input-file -p 'assign-engines{arch=hybrid hw="%S/tile_small.hw"},tile,plan-memory' | filecheck %s --check-prefix=HYBRID

// Four 1x1 convs on the reused engine of the small board (64 KB on chip). The cost model
// picks weights+fmaps: all weights resident, the feature maps between the layers on chip,
// allocated by liveness -- c1's output (live in c1..c2) and c3's (c3..c4) share offset
// 17920; c2's (c2..c3) overlaps both in time and sits above. c4's is the result: DRAM.
// The engine's ping-pong tiles take [0, 16896).
// CHECK:      builtin.module attributes {{{.*}}accel.plan = "weights+fmaps", accel.onchip_peak = 34304 : i64} {
// CHECK-NEXT:   accel.engine @seml {{{.*}}buffer_offset = 0 : i64, buffer_bytes = 16896 : i64}
// CHECK:        %a = accel.layer @seml(%x) {{{.*}}input = "dram", weights = "onchip", weights_offset = 16896 : i64, output = "onchip", output_offset = 17920 : i64}
// CHECK:        %b = accel.layer @seml(%a) {{{.*}}input = "onchip", weights = "onchip", weights_offset = 17152 : i64, output = "onchip", output_offset = 26112 : i64}
// CHECK:        %c = accel.layer @seml(%b) {{{.*}}input = "onchip", weights = "onchip", weights_offset = 17408 : i64, output = "onchip", output_offset = 17920 : i64}
// CHECK:        %d = accel.layer @seml(%c) {{{.*}}input = "onchip", weights = "onchip", weights_offset = 17664 : i64, output = "dram"}

// Forced ping-pong: every tensor of the reused engine in DRAM, only the tiles on chip.
// PP:      accel.plan = "ping-pong", accel.onchip_peak = 16896 : i64
// PP:      %a = accel.layer @seml(%x) {{{.*}}input = "dram", weights = "dram", output = "dram"}
// PP:      %d = accel.layer @seml(%c) {{{.*}}input = "dram", weights = "dram", output = "dram"}

// Hybrid maps the whole net onto a pipeline (it fits): plans differ only for a reused
// engine, so the first, ping-pong, is kept. Pipeline layers keep their weights and a line
// buffer on chip and stream feature maps to each other; the input and result are in DRAM.
// HYBRID:  accel.plan = "ping-pong", accel.onchip_peak = 5120 : i64
// HYBRID:  %a = accel.layer @sesl_0(%x) {{{.*}}input = "dram", weights = "onchip", weights_offset = 1024 : i64, output = "stream", buffer_offset = 0 : i64}
// HYBRID:  %b = accel.layer @sesl_1(%a) {{{.*}}input = "stream", weights = "onchip", weights_offset = 2304 : i64, output = "stream", buffer_offset = 1280 : i64}
// HYBRID:  %d = accel.layer @sesl_3(%c) {{{.*}}input = "stream", weights = "onchip", weights_offset = 4864 : i64, output = "dram", buffer_offset = 3840 : i64}
func.func @main(%x: tensor<1x8x16x16xf32>) -> tensor<1x8x16x16xf32> {
  %w1 = nn.weight "c1.w" : tensor<8x8x1x1xf32>
  %w2 = nn.weight "c2.w" : tensor<8x8x1x1xf32>
  %w3 = nn.weight "c3.w" : tensor<8x8x1x1xf32>
  %w4 = nn.weight "c4.w" : tensor<8x8x1x1xf32>
  %a = nn.conv2d %x, %w1 {name = "c1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x8x16x16xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x16x16xf32>
  %b = nn.conv2d %a, %w2 {name = "c2", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x8x16x16xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x16x16xf32>
  %c = nn.conv2d %b, %w3 {name = "c3", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x8x16x16xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x16x16xf32>
  %d = nn.conv2d %c, %w4 {name = "c4", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x8x16x16xf32>, tensor<8x8x1x1xf32>) -> tensor<1x8x16x16xf32>
  func.return %d : tensor<1x8x16x16xf32>
}
