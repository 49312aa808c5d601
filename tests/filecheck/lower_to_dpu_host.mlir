// RUN: not layerloom-opt %s -p lower-to-dpu 2>&1 | filecheck %s --check-prefix=STRICT
// RUN: layerloom-opt %s -p 'lower-to-dpu{host-suffix=true}' --weights-out %t.npz | filecheck %s

// conv1 (1x1, relu), conv2 (3x3, group 2), conv3 (1x1). The DPU has no grouped
// convolution: by default lower-to-dpu refuses, naming the layer and why ...
// STRICT: layerloom-opt: error: conv2: grouped convolution (group 2) is not on the DPU; only group 1 and depthwise

// ... with host-suffix=true the DPU program ends before conv2: conv1's map is the program's
// output (in `output`), and conv2, conv3 and the dequantize run on the host, after the
// dpu.run. The program records where and why the host takes over.
// CHECK:      dpu.program @dpu attributes {host_from = "conv2: grouped convolution (group 2) is not on the DPU; only group 1 and depthwise", hw = "zcu102-dpu"
// CHECK-SAME:   outputs = [{reg = "output", offset = 0 : i64, shape = array<i64: 4, 4, 4>, strides = array<i64: 16, 4>, scale = 6.250000e-02 : f64}]} {
// CHECK-NEXT:   dpu.layer "conv1"
// CHECK:          dpu.save wait=compute bank=2 addr=0x0 reg=output offset=0x0 rows=4 cols=4 chans=4 row_stride=16 col_stride=4
// CHECK-NEXT:   }
// CHECK-NEXT:   dpu.end
// CHECK:      func.func @main
// CHECK-NEXT:   %1 = qnn.quantize %0
// CHECK-NEXT:   %2 = nn.weight "dpu.weights" {name = "dpu"} : tensor<288xui8>
// CHECK-NEXT:   %3 = dpu.run @dpu(%1, %2) : (tensor<1x2x4x4xi8>, tensor<288xui8>) -> tensor<1x4x4x4xi8>
// CHECK-NEXT:   %4 = nn.weight "conv2.q"
// CHECK-NEXT:   %5 = qnn.conv2d %3, %4 {{.*}} group = 2 : i64
// CHECK:        %7 = qnn.conv2d %5, %6
// CHECK-NEXT:   %8 = qnn.dequantize %7

builtin.module {
  func.func @main(%0: tensor<1x2x4x4xf32> {nn.name = "x"}) -> (tensor<1x4x4x4xf32> {nn.name = "y"}) {
    %1 = qnn.quantize %0 {scale = 3.125000e-02 : f64, zero_point = 0 : i64, name = "x.quantize"} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xi8>
    %2 = nn.weight "conv1.q" {name = "conv1", value = dense<[[[[65]], [[-82]]], [[[54]], [[-73]]], [[[-116]], [[-55]]], [[[-65]], [[-7]]]]> : tensor<4x2x1x1xi8>} : tensor<4x2x1x1xi8>
    %3 = qnn.conv2d %1, %2 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, input_scale = 3.125000e-02 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 3.125000e-02, 7.812500e-03, 3.906250e-03, 3.125000e-02>, scale = 6.250000e-02 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 6, 8, 9, 6>, activation = "relu", clamp_min = 0 : i64, name = "conv1"} : (tensor<1x2x4x4xi8>, tensor<4x2x1x1xi8>) -> tensor<1x4x4x4xi8>
    %4 = nn.weight "conv2.q" {name = "conv2", value = dense<[[[[-18, 71, 5], [-8, -6, -14], [-23, -8, 10]], [[-5, 20, -4], [1, 33, 12], [-11, -4, 12]]], [[[83, -12, -10], [43, -38, -12], [38, 25, 4]], [[29, -121, 44], [-41, -71, 12], [30, -19, -46]]], [[[1, -2, 60], [32, 8, 47], [-9, -40, 25]], [[25, -9, -33], [10, -106, 29], [21, -70, 3]]], [[[-41, 32, -87], [-39, 30, 49], [-92, -21, 14]], [[-26, 68, -51], [15, -45, 60], [-1, -16, -73]]]]> : tensor<4x2x3x3xi8>} : tensor<4x2x3x3xi8>
    %5 = qnn.conv2d %3, %4 {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 2 : i64, input_scale = 6.250000e-02 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 1.562500e-02, 7.812500e-03, 7.812500e-03, 7.812500e-03>, scale = 1.250000e-01 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 7, 8, 8, 8>, name = "conv2"} : (tensor<1x4x4x4xi8>, tensor<4x2x3x3xi8>) -> tensor<1x4x4x4xi8>
    %6 = nn.weight "conv3.q" {name = "conv3", value = dense<[[[[76]], [[34]], [[34]], [[51]]], [[[32]], [[-58]], [[-72]], [[-72]]], [[[62]], [[-66]], [[-27]], [[-15]]], [[[10]], [[26]], [[-57]], [[-78]]]]> : tensor<4x4x1x1xi8>} : tensor<4x4x1x1xi8>
    %7 = qnn.conv2d %5, %6 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, input_scale = 1.250000e-01 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 1.562500e-02, 7.812500e-03, 1.562500e-02, 1.562500e-02>, scale = 1.250000e-01 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 6, 7, 6, 6>, name = "conv3"} : (tensor<1x4x4x4xi8>, tensor<4x4x1x1xi8>) -> tensor<1x4x4x4xi8>
    %8 = qnn.dequantize %7 {scale = 1.250000e-01 : f64, zero_point = 0 : i64, name = "conv3.dequantize"} : (tensor<1x4x4x4xi8>) -> tensor<1x4x4x4xf32>
    func.return %8 : tensor<1x4x4x4xf32>
  }
}
