// RUN: layerloom-opt %s -p canonicalize,fold-batchnorm,fuse-activation | filecheck %s
// RUN: layerloom-opt %s --print-op-generic | layerloom-opt -p canonicalize,fold-batchnorm,fuse-activation | filecheck %s
// RUN: layerloom-opt %s --print-op-generic | filecheck %s --check-prefix=GENERIC

// The three passes in a row: dropout goes, the batchnorm folds into the conv (no bias:
// s = [2, 1], t = [-1, 1]), the relu fuses. The generic form parses back to the same IR.

// CHECK:      func.func @main(%x: tensor<1x1x2x2xf32> {nn.name = "x"}) -> (tensor<1x2x2x2xf32> {nn.name = "y"}) {
// CHECK-NEXT:   %w = nn.weight "conv.w.bn" {value = dense<{{\[\[\[\[}}2.000000e+00]]], {{\[\[\[}}3.000000e+00]]]]> : tensor<2x1x1x1xf32>} : tensor<2x1x1x1xf32>
// CHECK-NEXT:   %bias = nn.weight "conv.bias.bn" {value = dense<[-1.000000e+00, 1.000000e+00]> : tensor<2xf32>} : tensor<2xf32>
// CHECK-NEXT:   %c = nn.conv2d %x, %w, %bias {name = "conv", {{.*}}activation = "relu"}
// CHECK-NEXT:   func.return %c : tensor<1x2x2x2xf32>

// GENERIC: "nn.weight"() <{handle = "conv.w", value = dense<{{.*}}> : tensor<2x1x1x1xf32>}> : () -> tensor<2x1x1x1xf32>
// GENERIC: "nn.conv2d"(%{{.*}}, %{{.*}}) <{name = "conv", {{.*}}}> : (tensor<1x1x2x2xf32>, tensor<2x1x1x1xf32>) -> tensor<1x2x2x2xf32>
func.func @main(%x: tensor<1x1x2x2xf32> {nn.name = "x"}) -> (tensor<1x2x2x2xf32> {nn.name = "y"}) {
  %w = nn.weight "conv.w" {value = dense<[[[[1.0]]], [[[3.0]]]]> : tensor<2x1x1x1xf32>} : tensor<2x1x1x1xf32>
  %scale = nn.weight "bn.scale" {value = dense<[2.0, 1.0]> : tensor<2xf32>} : tensor<2xf32>
  %bias = nn.weight "bn.bias" {value = dense<1.0> : tensor<2xf32>} : tensor<2xf32>
  %mean = nn.weight "bn.mean" {value = dense<[1.0, 0.0]> : tensor<2xf32>} : tensor<2xf32>
  %var = nn.weight "bn.var" {value = dense<0.0> : tensor<2xf32>} : tensor<2xf32>
  %d = nn.identity %x {name = "dropout"} : (tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32>
  %c = nn.conv2d %d, %w {name = "conv", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<2x1x1x1xf32>) -> tensor<1x2x2x2xf32>
  %n = nn.batchnorm %c, %scale, %bias, %mean, %var {name = "bn", epsilon = 1.0 : f64} : (tensor<1x2x2x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x2x2xf32>
  %r = nn.relu %n {name = "relu"} : (tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xf32>
  func.return %r : tensor<1x2x2x2xf32>
}
