// RUN: not layerloom-opt %s -p lower-to-dpu 2>&1 | filecheck %s --check-prefix=FIXED
// RUN: not layerloom-opt %s -p 'lower-to-dpu{host-suffix=true}' 2>&1 | filecheck %s --check-prefix=FIXED
// RUN: not layerloom-opt %s -p 'lower-to-dpu{hw=zcu102}' 2>&1 | filecheck %s --check-prefix=NODPU
// RUN: not layerloom-opt %s -p 'lower-to-dpu{hw=nosuchboard}' 2>&1 | filecheck %s --check-prefix=TARGET

// The DPU requantizes by shifts: a program quantized with the fixed-point scheme has no
// layer it can run (not even with host-suffix: the DPU program would be empty).
// FIXED:  layerloom-opt: error: conv1: the DPU requantizes by powers of two; 'qnn.conv2d' uses scheme 'fixed'
// NODPU:  layerloom-opt: error: lower-to-dpu: target 'zcu102' has no DPU engine
// TARGET: layerloom-opt: error: unknown target 'nosuchboard'

builtin.module {
  func.func @main(%0: tensor<1x2x4x4xf32> {nn.name = "x"}) -> (tensor<1x4x4x4xf32> {nn.name = "y"}) {
    %1 = qnn.quantize %0 {scale = 0.018937259912490845 : f64, zero_point = 15 : i64, name = "x.quantize"} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xi8>
    %2 = nn.weight "conv1.q" {name = "conv1", value = dense<[[[[101]], [[-127]]], [[[94]], [[-127]]], [[[-127]], [[-60]]], [[[-127]], [[-15]]]]> : tensor<4x2x1x1xi8>} : tensor<4x2x1x1xi8>
    %3 = qnn.conv2d %1, %2 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, input_scale = 0.018937259912490845 : f64, input_zero_point = 15 : i64, weight_scales = array<f64: 0.020123345777392387, 0.0044706268236041069, 0.0035641677677631378, 0.015905402600765228>, scale = 0.030089749023318291 : f64, zero_point = -128 : i64, scheme = "fixed", multipliers = array<i64: 1740638575, 1546809480, 1233180202, 1375792953>, shifts = array<i64: 6, 8, 8, 6>, activation = "relu", clamp_min = -128 : i64, name = "conv1"} : (tensor<1x2x4x4xi8>, tensor<4x2x1x1xi8>) -> tensor<1x4x4x4xi8>
    %4 = nn.weight "conv2.q" {name = "conv2", value = dense<[[[[-33, 127, 9], [-13, -11, -26], [-40, -15, 18]], [[-9, 37, -8], [1, 59, 21], [-19, -7, 21]]], [[[87, -12, -11], [45, -40, -13], [40, 26, 4]], [[30, -127, 46], [-43, -75, 12], [31, -20, -48]]], [[[1, -3, 72], [38, 10, 57], [-10, -47, 30]], [[30, -11, -40], [12, -127, 35], [25, -83, 3]]], [[[-57, 45, -120], [-54, 42, 68], [-127, -29, 19]], [[-36, 94, -70], [21, -62, 83], [-1, -22, -101]]]]> : tensor<4x2x3x3xi8>} : tensor<4x2x3x3xi8>
    %5 = qnn.conv2d %3, %4 {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 2 : i64, input_scale = 0.030089749023318291 : f64, input_zero_point = -128 : i64, weight_scales = array<f64: 0.0087217837572097778, 0.0074229980818927288, 0.0065456544980406761, 0.0056640561670064926>, scale = 0.05303867906332016 : f64, zero_point = -50 : i64, scheme = "fixed", multipliers = array<i64: 1360100549, 1157564100, 2041497136, 1766539075>, shifts = array<i64: 7, 7, 8, 8>, name = "conv2"} : (tensor<1x4x4x4xi8>, tensor<4x2x3x3xi8>) -> tensor<1x4x4x4xi8>
    %6 = nn.weight "conv3.q" {name = "conv3", value = dense<[[[[127]], [[57]], [[57]], [[86]]], [[[55]], [[-101]], [[-127]], [[-127]]], [[[119]], [[-127]], [[-52]], [[-28]]], [[[16]], [[42]], [[-92]], [[-127]]]]> : tensor<4x4x1x1xi8>} : tensor<4x4x1x1xi8>
    %7 = qnn.conv2d %5, %6 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, input_scale = 0.05303867906332016 : f64, input_zero_point = -50 : i64, weight_scales = array<f64: 0.0093640172854065895, 0.0044555589556694031, 0.0081310663372278214, 0.0096323173493146896>, scale = 0.065794497728347778 : f64, zero_point = -55 : i64, scheme = "fixed", multipliers = array<i64: 2074938196, 1974581887, 1801733124, 2134389822>, shifts = array<i64: 7, 8, 7, 7>, name = "conv3"} : (tensor<1x4x4x4xi8>, tensor<4x4x1x1xi8>) -> tensor<1x4x4x4xi8>
    %8 = qnn.dequantize %7 {scale = 0.065794497728347778 : f64, zero_point = -55 : i64, name = "conv3.dequantize"} : (tensor<1x4x4x4xi8>) -> tensor<1x4x4x4xf32>
    func.return %8 : tensor<1x4x4x4xf32>
  }
}
