// RUN: layerloom-opt %s --split-input-file -p 'prune{ratio=0.5}' | filecheck %s

// conv -> batchnorm -> relu -> conv, L1 criterion. conv1's filters have L1 norms
// [1, 3, 0.5, 2]: half of them stay, channels 1 and 3. conv1's filters and bias, the
// batchnorm's parameters and conv2's input channels are sliced to [1, 3]; conv2's own
// channels are the graph output and stay.
// CHECK-LABEL: func.func @chain
// CHECK-NEXT:    %w1 = nn.weight "conv1.w.pruned" {value = dense<{{\[\[\[\[}}-3.000000e+00]]], {{\[\[\[}}2.000000e+00]]]]> : tensor<2x1x1x1xf32>}
// CHECK-NEXT:    %b1 = nn.weight "conv1.b.pruned" {value = dense<[2.000000e-01, 4.000000e-01]> : tensor<2xf32>}
// CHECK-NEXT:    %g = nn.weight "bn1.gamma.pruned" {value = dense<[2.000000e+00, 4.000000e+00]> : tensor<2xf32>}
// CHECK-NEXT:    %be = nn.weight "bn1.beta.pruned" {value = dense<[5.000000e-01, 1.500000e+00]> : tensor<2xf32>}
// CHECK-NEXT:    %mu = nn.weight "bn1.mean.pruned" {value = dense<0.000000e+00> : tensor<2xf32>}
// CHECK-NEXT:    %var = nn.weight "bn1.var.pruned" {value = dense<1.000000e+00> : tensor<2xf32>}
// CHECK-NEXT:    %w2 = nn.weight "conv2.w.pruned" {value = dense<{{\[\[\[\[}}2.000000e+00]], {{\[\[}}4.000000e+00]]], {{\[\[\[}}6.000000e+00]], {{\[\[}}8.000000e+00]]]]> : tensor<2x2x1x1xf32>}
// CHECK-NEXT:    %c1 = nn.conv2d %x, %w1, %b1 {name = "conv1", {{.*}}} : (tensor<1x1x2x2xf32>, tensor<2x1x1x1xf32>, tensor<2xf32>) -> tensor<1x2x2x2xf32>
// CHECK-NEXT:    %n1 = nn.batchnorm %c1, %g, %be, %mu, %var {{.*}} -> tensor<1x2x2x2xf32>
// CHECK-NEXT:    %r1 = nn.relu %n1 {name = "relu1"} : (tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xf32>
// CHECK-NEXT:    %c2 = nn.conv2d %r1, %w2 {name = "conv2", {{.*}}} : (tensor<1x2x2x2xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x2x2xf32>
// CHECK-NEXT:    func.return %c2
func.func @chain(%x: tensor<1x1x2x2xf32>) -> tensor<1x2x2x2xf32> {
  %w1 = nn.weight "conv1.w" {value = dense<[[[[1.0]]], [[[-3.0]]], [[[0.5]]], [[[2.0]]]]> : tensor<4x1x1x1xf32>} : tensor<4x1x1x1xf32>
  %b1 = nn.weight "conv1.b" {value = dense<[0.1, 0.2, 0.3, 0.4]> : tensor<4xf32>} : tensor<4xf32>
  %g = nn.weight "bn1.gamma" {value = dense<[1.0, 2.0, 3.0, 4.0]> : tensor<4xf32>} : tensor<4xf32>
  %be = nn.weight "bn1.beta" {value = dense<[0.0, 0.5, 1.0, 1.5]> : tensor<4xf32>} : tensor<4xf32>
  %mu = nn.weight "bn1.mean" {value = dense<0.0> : tensor<4xf32>} : tensor<4xf32>
  %var = nn.weight "bn1.var" {value = dense<1.0> : tensor<4xf32>} : tensor<4xf32>
  %w2 = nn.weight "conv2.w" {value = dense<[[[[1.0]], [[2.0]], [[3.0]], [[4.0]]], [[[5.0]], [[6.0]], [[7.0]], [[8.0]]]]> : tensor<2x4x1x1xf32>} : tensor<2x4x1x1xf32>
  %c1 = nn.conv2d %x, %w1, %b1 {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<4x1x1x1xf32>, tensor<4xf32>) -> tensor<1x4x2x2xf32>
  %n1 = nn.batchnorm %c1, %g, %be, %mu, %var {name = "bn1", epsilon = 0.0 : f64} : (tensor<1x4x2x2xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x2x2xf32>
  %r1 = nn.relu %n1 {name = "relu1"} : (tensor<1x4x2x2xf32>) -> tensor<1x4x2x2xf32>
  %c2 = nn.conv2d %r1, %w2 {name = "conv2", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x2x2xf32>, tensor<2x4x1x1xf32>) -> tensor<1x2x2x2xf32>
  func.return %c2 : tensor<1x2x2x2xf32>
}

// -----

// Residual add: convs a and b feed one add, so their channels are tied and chosen by
// the summed L1 norm: a's [4, 0, 0, 1] + b's [0, 3, 0, 1] = [4, 3, 0, 2] keeps channels
// 0 and 1 of both (alone, a would keep 0 and 3, b 1 and 3). The add, the relu and conv
// c's input channels follow.
// CHECK-LABEL: func.func @residual
// CHECK-NEXT:    %wa = nn.weight "a.w.pruned" {value = dense<{{\[\[\[\[}}4.000000e+00]]], {{\[\[\[}}0.000000e+00]]]]> : tensor<2x1x1x1xf32>}
// CHECK-NEXT:    %wb = nn.weight "b.w.pruned" {value = dense<{{\[\[\[\[}}0.000000e+00]]], {{\[\[\[}}3.000000e+00]]]]> : tensor<2x1x1x1xf32>}
// CHECK-NEXT:    %wc = nn.weight "c.w.pruned" {value = dense<{{\[\[\[\[}}1.000000e+00]], {{\[\[}}2.000000e+00]]]]> : tensor<1x2x1x1xf32>}
// CHECK-NEXT:    %a = nn.conv2d %x, %wa {{.*}} -> tensor<1x2x3x3xf32>
// CHECK-NEXT:    %b = nn.conv2d %x, %wb {{.*}} -> tensor<1x2x3x3xf32>
// CHECK-NEXT:    %s = nn.add %a, %b {name = "add"} : (tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
// CHECK-NEXT:    %r = nn.relu %s {{.*}} -> tensor<1x2x3x3xf32>
// CHECK-NEXT:    %c = nn.conv2d %r, %wc {{.*}} : (tensor<1x2x3x3xf32>, tensor<1x2x1x1xf32>) -> tensor<1x1x3x3xf32>
func.func @residual(%x: tensor<1x1x3x3xf32>) -> tensor<1x1x3x3xf32> {
  %wa = nn.weight "a.w" {value = dense<[[[[4.0]]], [[[0.0]]], [[[0.0]]], [[[1.0]]]]> : tensor<4x1x1x1xf32>} : tensor<4x1x1x1xf32>
  %wb = nn.weight "b.w" {value = dense<[[[[0.0]]], [[[3.0]]], [[[0.0]]], [[[1.0]]]]> : tensor<4x1x1x1xf32>} : tensor<4x1x1x1xf32>
  %wc = nn.weight "c.w" {value = dense<[[[[1.0]], [[2.0]], [[3.0]], [[4.0]]]]> : tensor<1x4x1x1xf32>} : tensor<1x4x1x1xf32>
  %a = nn.conv2d %x, %wa {name = "a", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x3x3xf32>, tensor<4x1x1x1xf32>) -> tensor<1x4x3x3xf32>
  %b = nn.conv2d %x, %wb {name = "b", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x3x3xf32>, tensor<4x1x1x1xf32>) -> tensor<1x4x3x3xf32>
  %s = nn.add %a, %b {name = "add"} : (tensor<1x4x3x3xf32>, tensor<1x4x3x3xf32>) -> tensor<1x4x3x3xf32>
  %r = nn.relu %s {name = "relu"} : (tensor<1x4x3x3xf32>) -> tensor<1x4x3x3xf32>
  %c = nn.conv2d %r, %wc {name = "c", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x3x3xf32>, tensor<1x4x1x1xf32>) -> tensor<1x1x3x3xf32>
  func.return %c : tensor<1x1x3x3xf32>
}

// -----

// Depthwise conv: its channels follow its input. conv1 keeps channels 1 and 3 (L1
// [1, 3, 0.5, 2]); the depthwise filters and bias are sliced the same way and its group
// becomes 2; the pointwise conv2 loses the same input channels.
// CHECK-LABEL: func.func @depthwise
// CHECK:         %wd = nn.weight "dw.w.pruned" {value = dense<{{\[\[\[\[}}2.000000e+01]]], {{\[\[\[}}4.000000e+01]]]]> : tensor<2x1x1x1xf32>}
// CHECK-NEXT:    %bd = nn.weight "dw.b.pruned" {value = dense<[2.000000e+00, 4.000000e+00]> : tensor<2xf32>}
// CHECK-NEXT:    %w2 = nn.weight "conv2.w.pruned" {value = dense<{{\[\[\[\[}}6.000000e+00]], {{\[\[}}8.000000e+00]]]]> : tensor<1x2x1x1xf32>}
// CHECK-NEXT:    %c1 = nn.conv2d {{.*}} -> tensor<1x2x3x3xf32>
// CHECK-NEXT:    %d = nn.conv2d %c1, %wd, %bd {name = "dw", {{.*}}group = 2 : i64} : (tensor<1x2x3x3xf32>, tensor<2x1x1x1xf32>, tensor<2xf32>) -> tensor<1x2x3x3xf32>
// CHECK-NEXT:    %c2 = nn.conv2d %d, %w2 {{.*}} : (tensor<1x2x3x3xf32>, tensor<1x2x1x1xf32>) -> tensor<1x1x3x3xf32>
func.func @depthwise(%x: tensor<1x1x3x3xf32>) -> tensor<1x1x3x3xf32> {
  %w1 = nn.weight "conv1.w" {value = dense<[[[[1.0]]], [[[-3.0]]], [[[0.5]]], [[[2.0]]]]> : tensor<4x1x1x1xf32>} : tensor<4x1x1x1xf32>
  %wd = nn.weight "dw.w" {value = dense<[[[[10.0]]], [[[20.0]]], [[[30.0]]], [[[40.0]]]]> : tensor<4x1x1x1xf32>} : tensor<4x1x1x1xf32>
  %bd = nn.weight "dw.b" {value = dense<[1.0, 2.0, 3.0, 4.0]> : tensor<4xf32>} : tensor<4xf32>
  %w2 = nn.weight "conv2.w" {value = dense<[[[[5.0]], [[6.0]], [[7.0]], [[8.0]]]]> : tensor<1x4x1x1xf32>} : tensor<1x4x1x1xf32>
  %c1 = nn.conv2d %x, %w1 {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x3x3xf32>, tensor<4x1x1x1xf32>) -> tensor<1x4x3x3xf32>
  %d = nn.conv2d %c1, %wd, %bd {name = "dw", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 4 : i64} : (tensor<1x4x3x3xf32>, tensor<4x1x1x1xf32>, tensor<4xf32>) -> tensor<1x4x3x3xf32>
  %c2 = nn.conv2d %d, %w2 {name = "conv2", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x3x3xf32>, tensor<1x4x1x1xf32>) -> tensor<1x1x3x3xf32>
  func.return %c2 : tensor<1x1x3x3xf32>
}

// -----

// Concat: a (2 channels, L1 [1, 3]) keeps channel 1, b (4 channels, L1 [2, 0.5, 4, 1])
// keeps 0 and 2; the concat's channels are a's then b's, so conv c keeps its input
// channels [1, 2 + 0, 2 + 2] = [1, 2, 4].
// CHECK-LABEL: func.func @concat
// CHECK:         %wc = nn.weight "c.w.pruned" {value = dense<{{\[\[\[\[}}1.100000e+01]], {{\[\[}}1.200000e+01]], {{\[\[}}1.400000e+01]]]]> : tensor<1x3x1x1xf32>}
// CHECK:         %a = nn.conv2d {{.*}} -> tensor<1x1x2x2xf32>
// CHECK-NEXT:    %b = nn.conv2d {{.*}} -> tensor<1x2x2x2xf32>
// CHECK-NEXT:    %cat = nn.concat %a, %b {name = "cat", axis = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<1x2x2x2xf32>) -> tensor<1x3x2x2xf32>
// CHECK-NEXT:    %c = nn.conv2d %cat, %wc {{.*}} : (tensor<1x3x2x2xf32>, tensor<1x3x1x1xf32>) -> tensor<1x1x2x2xf32>
func.func @concat(%x: tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32> {
  %wa = nn.weight "a.w" {value = dense<[[[[1.0]]], [[[3.0]]]]> : tensor<2x1x1x1xf32>} : tensor<2x1x1x1xf32>
  %wb = nn.weight "b.w" {value = dense<[[[[2.0]]], [[[0.5]]], [[[4.0]]], [[[1.0]]]]> : tensor<4x1x1x1xf32>} : tensor<4x1x1x1xf32>
  %wc = nn.weight "c.w" {value = dense<[[[[10.0]], [[11.0]], [[12.0]], [[13.0]], [[14.0]], [[15.0]]]]> : tensor<1x6x1x1xf32>} : tensor<1x6x1x1xf32>
  %a = nn.conv2d %x, %wa {name = "a", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<2x1x1x1xf32>) -> tensor<1x2x2x2xf32>
  %b = nn.conv2d %x, %wb {name = "b", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<4x1x1x1xf32>) -> tensor<1x4x2x2xf32>
  %cat = nn.concat %a, %b {name = "cat", axis = 1 : i64} : (tensor<1x2x2x2xf32>, tensor<1x4x2x2xf32>) -> tensor<1x6x2x2xf32>
  %c = nn.conv2d %cat, %wc {name = "c", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x6x2x2xf32>, tensor<1x6x1x1xf32>) -> tensor<1x1x2x2xf32>
  func.return %c : tensor<1x1x2x2xf32>
}

// -----

// Flatten then the final FC: channel c of the 4 x 2 x 2 map is features 4c .. 4c + 3,
// so keeping channels 1 and 3 keeps rows 4-7 and 12-15 of the FC's weight (B[k] = k).
// CHECK-LABEL: func.func @flatten_fc
// CHECK:         %wf = nn.weight "fc.w.pruned" {value = dense<{{\[\[}}4.000000e+00], [5.000000e+00], [6.000000e+00], [7.000000e+00], [1.200000e+01], [1.300000e+01], [1.400000e+01], [1.500000e+01]]> : tensor<8x1xf32>}
// CHECK:         %f = nn.reshape %c {name = "flatten"} : (tensor<1x2x2x2xf32>) -> tensor<1x8xf32>
// CHECK-NEXT:    %y = nn.gemm %f, %wf {{.*}} : (tensor<1x8xf32>, tensor<8x1xf32>) -> tensor<1x1xf32>
func.func @flatten_fc(%x: tensor<1x1x2x2xf32>) -> tensor<1x1xf32> {
  %w = nn.weight "conv.w" {value = dense<[[[[1.0]]], [[[-3.0]]], [[[0.5]]], [[[2.0]]]]> : tensor<4x1x1x1xf32>} : tensor<4x1x1x1xf32>
  %wf = nn.weight "fc.w" {value = dense<[[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [7.0], [8.0], [9.0], [10.0], [11.0], [12.0], [13.0], [14.0], [15.0]]> : tensor<16x1xf32>} : tensor<16x1xf32>
  %c = nn.conv2d %x, %w {name = "conv", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<4x1x1x1xf32>) -> tensor<1x4x2x2xf32>
  %f = nn.reshape %c {name = "flatten"} : (tensor<1x4x2x2xf32>) -> tensor<1x16xf32>
  %y = nn.gemm %f, %wf {name = "fc", trans_a = 0 : i64, trans_b = 0 : i64, alpha = 1.0 : f64, beta = 1.0 : f64} : (tensor<1x16xf32>, tensor<16x1xf32>) -> tensor<1x1xf32>
  func.return %y : tensor<1x1xf32>
}

// -----

// Not pruned: a conv whose channels reach the graph output through a transpose (an op
// prune cannot follow), and a conv tied by a residual add to the graph input.
// CHECK-LABEL: func.func @skipped
// CHECK-NOT:     pruned
// CHECK:         func.return
func.func @skipped(%x: tensor<1x4x2x2xf32>) -> (tensor<1x2x2x4xf32>, tensor<1x4x2x2xf32>) {
  %w = nn.weight "w" {value = dense<1.0> : tensor<4x4x1x1xf32>} : tensor<4x4x1x1xf32>
  %c = nn.conv2d %x, %w {name = "conv", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x2x2xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x2x2xf32>
  %t = nn.transpose %c {name = "t", perm = array<i64: 0, 2, 3, 1>} : (tensor<1x4x2x2xf32>) -> tensor<1x2x2x4xf32>
  %r = nn.conv2d %x, %w {name = "branch", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x4x2x2xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x2x2xf32>
  %s = nn.add %x, %r {name = "res"} : (tensor<1x4x2x2xf32>, tensor<1x4x2x2xf32>) -> tensor<1x4x2x2xf32>
  %u = nn.relu %s {name = "u"} : (tensor<1x4x2x2xf32>) -> tensor<1x4x2x2xf32>
  %v = nn.transpose %u {name = "v", perm = array<i64: 0, 1, 2, 3>} : (tensor<1x4x2x2xf32>) -> tensor<1x4x2x2xf32>
  func.return %t, %v : tensor<1x2x2x4xf32>, tensor<1x4x2x2xf32>
}
