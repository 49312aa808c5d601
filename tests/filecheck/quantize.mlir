// RUN: python -c "import numpy as np; np.savez('%t.npz', x=np.linspace(-1, 1, 32, dtype=np.float32).reshape(1, 2, 4, 4))"
// RUN: layerloom-opt %s --split-input-file -p 'quantize{calib="%t.npz"}' | filecheck %s --check-prefix=FIXED
// RUN: layerloom-opt %s --split-input-file -p 'quantize{calib="%t.npz" scheme=pow2}' | filecheck %s --check-prefix=POW2
// RUN: layerloom-opt %s --split-input-file -p 'quantize{calib="%t.npz" bias-correction=false}' | filecheck %s --check-prefix=NOBC

// conv + relu, global average pool, flatten, softmax. The relu fuses into the conv; the
// input gets the first quantize, the softmax stays float behind a dequantize; the reshape
// runs on int8. Weights become int8 (per channel), the bias int32. Bias correction moves
// each bias by the mean shift that rounding the weights causes on the calibration data:
// conv1's output channel 0 reads input channel 1 (mean +0.516) through -0.25, which becomes
// -64 * 0.5/127 = -0.251969 (error +0.001969), so the bias gains 0.001969 * 0.516 = 0.001016
// = 32.9 bias steps (s_x * s_w = 3.088e-5): round(3238.4 + 32.9) = 3271.
// FIXED-LABEL: func.func @main
// FIXED-NEXT:    %0 = qnn.quantize %x {scale = {{.*}} : f64, zero_point = -1 : i64, name = "x.quantize"} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xi8>
// FIXED-NEXT:    %1 = nn.weight "conv1.q" {name = "conv1", value = dense<{{\[\[\[\[}}127]], {{\[\[}}-64]]], {{\[\[\[}}127]], {{\[\[}}16]]], {{\[\[\[}}-127]], {{\[\[}}85]]]]> : tensor<3x2x1x1xi8>} : tensor<3x2x1x1xi8>
// FIXED-NEXT:    %2 = nn.weight "conv1.q_1" {name = "conv1", value = dense<[3271, -3247, 1058]> : tensor<3xi32>} : tensor<3xi32>
// NOBC:          nn.weight "conv1.q_1" {name = "conv1", value = dense<[3238, -3238, 1079]> : tensor<3xi32>}
// FIXED-NEXT:    %3 = qnn.conv2d %0, %1, %2 {{{.*}}input_zero_point = -1 : i64, weight_scales = array<f64: {{[^,]*}}, {{[^,]*}}, {{[^>]*}}>, scale = {{.*}} : f64, zero_point = -128 : i64, scheme = "fixed", multipliers = array<i64: {{.*}}>, shifts = array<i64: {{.*}}>, activation = "relu", clamp_min = -128 : i64, name = "conv1"}
// FIXED-NEXT:    %4 = qnn.global_pool %3 {kind = "avg", {{.*}}input_zero_point = -128 : i64, {{.*}}scheme = "fixed", multipliers = array<i64: {{[0-9]+}}>, shifts = array<i64: {{-?[0-9]+}}>, name = "gap"} : (tensor<1x3x4x4xi8>) -> tensor<1x3x1x1xi8>
// FIXED-NEXT:    %5 = nn.reshape %4 {name = "flatten"} : (tensor<1x3x1x1xi8>) -> tensor<1x3xi8>
// FIXED-NEXT:    %6 = qnn.dequantize %5 {{{.*}}name = "flatten.dequantize"} : (tensor<1x3xi8>) -> tensor<1x3xf32>
// FIXED-NEXT:    %s = nn.softmax %6 {name = "softmax", axis = 1 : i64}
// FIXED-NEXT:    func.return %s
// POW2-LABEL: func.func @main
// POW2:          qnn.quantize %x {scale = 1.562500e-02 : f64, zero_point = 0 : i64
// POW2:          qnn.conv2d {{.*}}weight_scales = array<f64: 7.812500e-03, 1.562500e-02, 7.812500e-03>, scale = 7.812500e-03 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 6, 5, 6>, activation = "relu", clamp_min = 0 : i64, name = "conv1"}
// POW2-NOT:      multipliers
// POW2:          qnn.global_pool
func.func @main(%x: tensor<1x2x4x4xf32> {nn.name = "x"}) -> (tensor<1x3xf32> {nn.name = "y"}) {
  %w = nn.weight "w" {value = dense<[[[[0.5]], [[-0.25]]], [[[1.0]], [[0.125]]], [[[-0.75]], [[0.5]]]]> : tensor<3x2x1x1xf32>} : tensor<3x2x1x1xf32>
  %b = nn.weight "b" {value = dense<[0.1, -0.2, 0.05]> : tensor<3xf32>} : tensor<3xf32>
  %c = nn.conv2d %x, %w, %b {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x2x4x4xf32>, tensor<3x2x1x1xf32>, tensor<3xf32>) -> tensor<1x3x4x4xf32>
  %r = nn.relu %c {name = "relu1"} : (tensor<1x3x4x4xf32>) -> tensor<1x3x4x4xf32>
  %g = nn.global_pool %r {name = "gap", kind = "avg"} : (tensor<1x3x4x4xf32>) -> tensor<1x3x1x1xf32>
  %f = nn.reshape %g {name = "flatten"} : (tensor<1x3x1x1xf32>) -> tensor<1x3xf32>
  %s = nn.softmax %f {name = "softmax", axis = 1 : i64} : (tensor<1x3xf32>) -> tensor<1x3xf32>
  func.return %s : tensor<1x3xf32>
}

// -----

// A lookup table (sigmoid), max pooling on int8 (it keeps the scale), a residual add with
// its relu fused, a concat of operands at different scales, average pooling with one
// parameter set per window count.
// FIXED-LABEL: func.func @main
// FIXED:         qnn.lut %0, %1 {{{.*}}activation = "sigmoid", name = "sig"} : (tensor<1x2x4x4xi8>, tensor<256xi8>) -> tensor<1x2x4x4xi8>
// FIXED:         qnn.add {{.*}}scheme = "fixed", operand_multipliers = array<i64: {{.*}}>, operand_shifts = array<i64: {{.*}}>, multipliers = array<i64: {{.*}}>, shifts = array<i64: {{.*}}>, {{.*}}activation = "relu", clamp_min = -128 : i64, name = "add"}
// FIXED-NOT:     nn.relu
// POW2-LABEL: func.func @main
// POW2-NEXT:     %0 = qnn.quantize %x {scale = 1.562500e-02 : f64, zero_point = 0 : i64, name = "x.quantize"}
// POW2-NEXT:     %1 = nn.weight "sig.q" {name = "sig", value = dense<"0x0F0F1010{{[0-9A-F]*}}"> : tensor<256xi8>} : tensor<256xi8>
// POW2-NEXT:     %2 = qnn.lut %0, %1 {input_scale = 1.562500e-02 : f64, input_zero_point = 0 : i64, scale = 7.812500e-03 : f64, zero_point = 0 : i64, activation = "sigmoid", name = "sig"}
// POW2-NEXT:     %3 = qnn.pool %2 {name = "maxpool", kind = "max", {{.*}}input_scale = 7.812500e-03 : f64, input_zero_point = 0 : i64, scale = 7.812500e-03 : f64, zero_point = 0 : i64}
// POW2-NEXT:     %4 = qnn.add %3, %0 {input_scales = array<f64: 7.812500e-03, 1.562500e-02>, input_zero_points = array<i64: 0, 0>, scheme = "pow2", operand_shifts = array<i64: 0, -1>, shifts = array<i64: 1>, scale = 1.562500e-02 : f64, zero_point = 0 : i64, activation = "relu", clamp_min = 0 : i64, name = "add"}
// POW2-NEXT:     %5 = qnn.concat %4, %2 {input_scales = array<f64: 1.562500e-02, 7.812500e-03>, input_zero_points = array<i64: 0, 0>, scheme = "pow2", shifts = array<i64: 0, 1>, scale = 1.562500e-02 : f64, zero_point = 0 : i64, axis = 1 : i64, name = "concat"}
// POW2-NEXT:     %6 = qnn.pool %5 {kind = "avg", {{.*}}scheme = "pow2", multipliers = array<i64: 1, 1, 43691, 1>, shifts = array<i64: 0, 1, 17, 2>, name = "avgpool"}
// POW2-NEXT:     %7 = qnn.dequantize %6 {scale = 1.562500e-02 : f64, zero_point = 0 : i64, name = "avgpool.dequantize"}
// POW2-NEXT:     func.return %7
func.func @main(%x: tensor<1x2x4x4xf32> {nn.name = "x"}) -> (tensor<1x4x2x2xf32> {nn.name = "y"}) {
  %s = nn.sigmoid %x {name = "sig"} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %m = nn.pool %s {name = "maxpool", kind = "max", kernel = array<i64: 3, 3>, strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64, count_include_pad = 0 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %a = nn.add %m, %x {name = "add"} : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %r = nn.relu %a {name = "relu"} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %c = nn.concat %r, %s {name = "concat", axis = 1 : i64} : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x4x4x4xf32>
  %p = nn.pool %c {name = "avgpool", kind = "avg", kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64, count_include_pad = 0 : i64} : (tensor<1x4x4x4xf32>) -> tensor<1x4x2x2xf32>
  func.return %p : tensor<1x4x2x2xf32>
}
