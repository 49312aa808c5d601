// RUN: layerloom-opt %s -p 'tile{hw="%S/tile_small.hw"}' | filecheck %s
// RUN: layerloom-opt %s -p 'tile{hw=zcu102}' | filecheck %s --check-prefix=BIG

// On the pipeline engine a layer streams: one output row at a time from a line buffer
// (e = 1, order "stream"). On the reused engine of the small board (64 KB of SRAM, tiles
// double-buffered in half of it) c2 -- 36 KB of weights, 64 KB of input, 256 KB of
// output -- is cut: 4 output x 16 input channels (the 64 lanes of the budget), 8 rows x
// 16 columns, input-stationary (each input tile is read once). The 2 x 2 pool reads
// every input once whatever the tile, so the fewest tiles that fit win (32 of them).
// CHECK:      %a = accel.layer @pipe(%x) {pes = 16 : i64, slot = 0 : i64, tile = array<i64: 16, 3, 1, 32>, order = "stream"}
// CHECK:      %b = accel.layer @reuse(%a) {pes = 48 : i64, slot = 0 : i64, tile = array<i64: 4, 16, 8, 16>, order = "input"}
// CHECK:      %p = accel.layer @reuse(%b) {pes = 48 : i64, slot = 1 : i64, tile = array<i64: 2, 1, 16, 16>, order = "output"}

// With the 4 MB of a ZCU102 c2 fits whole (no tiling), the pool too.
// BIG:        %b = accel.layer @reuse(%a) {pes = 48 : i64, slot = 0 : i64, tile = array<i64: 64, 16, 32, 32>, order = "output"}
// BIG:        %p = accel.layer @reuse(%b) {pes = 48 : i64, slot = 1 : i64, tile = array<i64: 64, 1, 16, 16>, order = "output"}
builtin.module attributes {accel.budget = 64 : i64} {
  accel.engine @pipe {kind = "sesl", role = "sesl", pes = 16 : i64, stage = 0 : i64, target_engine = "sesl"}
  accel.engine @reuse {kind = "seml", role = "seml", pes = 48 : i64, stage = 1 : i64, target_engine = "seml"}
  func.func @main(%x: tensor<1x3x32x32xf32>) -> tensor<1x64x16x16xf32> {
    %a = accel.layer @pipe(%x) {pes = 16 : i64, slot = 0 : i64} : (tensor<1x3x32x32xf32>) -> tensor<1x16x32x32xf32> {
    ^bb0(%in: tensor<1x3x32x32xf32>):
      %w = nn.weight "c1.w" : tensor<16x3x3x3xf32>
      %c = nn.conv2d %in, %w {name = "c1", strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x3x32x32xf32>, tensor<16x3x3x3xf32>) -> tensor<1x16x32x32xf32>
      accel.yield %c : tensor<1x16x32x32xf32>
    }
    %b = accel.layer @reuse(%a) {pes = 48 : i64, slot = 0 : i64} : (tensor<1x16x32x32xf32>) -> tensor<1x64x32x32xf32> {
    ^bb0(%in: tensor<1x16x32x32xf32>):
      %w = nn.weight "c2.w" : tensor<64x16x3x3xf32>
      %c = nn.conv2d %in, %w {name = "c2", strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x16x32x32xf32>, tensor<64x16x3x3xf32>) -> tensor<1x64x32x32xf32>
      accel.yield %c : tensor<1x64x32x32xf32>
    }
    %p = accel.layer @reuse(%b) {pes = 48 : i64, slot = 1 : i64} : (tensor<1x64x32x32xf32>) -> tensor<1x64x16x16xf32> {
    ^bb0(%in: tensor<1x64x32x32xf32>):
      %r = nn.pool %in {name = "pool", kind = "max", kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64, count_include_pad = 0 : i64} : (tensor<1x64x32x32xf32>) -> tensor<1x64x16x16xf32>
      accel.yield %r : tensor<1x64x16x16xf32>
    }
    func.return %p : tensor<1x64x16x16xf32>
  }
}
