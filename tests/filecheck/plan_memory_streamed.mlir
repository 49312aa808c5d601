// RUN: layerloom-opt %s -p 'assign-engines{arch=sesl hw="%S/tile_small.hw"},tile,plan-memory' | filecheck %s

// A pipeline whose weights do not all fit the small board's 64 KB: c2's 64 KB stay in
// DRAM and stream past its engine once per tile of 2 output rows (4 passes a frame),
// which buffers those rows (the tile pass's one row becomes two: 41,472 bytes with the
// weight FIFO); c1 keeps its 16 KB of weights on chip. Chosen by benefit: c1's weights
// save 128 KB of DRAM reads for 12 KB on chip, c2's second row 256 KB for 20 KB; c2's
// next steps (4 rows: 41 KB more) do not fit.
// CHECK:      builtin.module attributes {{{.*}}accel.arch = "sesl"{{.*}}accel.onchip_peak = 61952 : i64} {
// CHECK:        %a = accel.layer @sesl_0(%x) {{{.*}}tile = array<i64: 64, 64, 1, 8>, order = "stream", input = "dram", weights = "onchip", weights_offset = 4096 : i64, output = "stream", buffer_offset = 0 : i64}
// CHECK:        %b = accel.layer @sesl_1(%a) {{{.*}}tile = array<i64: 256, 64, 2, 8>, order = "stream", input = "stream", weights = "dram", output = "dram", buffer_offset = 20480 : i64}
func.func @main(%x: tensor<1x64x8x8xf32>) -> tensor<1x256x8x8xf32> {
  %w1 = nn.weight "c1.w" : tensor<64x64x1x1xf32>
  %w2 = nn.weight "c2.w" : tensor<256x64x1x1xf32>
  %a = nn.conv2d %x, %w1 {name = "c1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x64x8x8xf32>, tensor<64x64x1x1xf32>) -> tensor<1x64x8x8xf32>
  %b = nn.conv2d %a, %w2 {name = "c2", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x64x8x8xf32>, tensor<256x64x1x1xf32>) -> tensor<1x256x8x8xf32>
  func.return %b : tensor<1x256x8x8xf32>
}
