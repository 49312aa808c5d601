// RUN: layerloom-opt %s --split-input-file -p fuse-activation | filecheck %s

// conv + relu: one conv with activation = "relu", named after the conv.
// CHECK-LABEL: func.func @conv_relu
// CHECK-NEXT:    %w = nn.weight "w"
// CHECK-NEXT:    %c = nn.conv2d %x, %w {name = "conv1", {{.*}}activation = "relu"} : (tensor<1x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<1x1x2x2xf32>
// CHECK-NEXT:    func.return %c
func.func @conv_relu(%x: tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32> {
  %w = nn.weight "w" : tensor<1x1x1x1xf32>
  %c = nn.conv2d %x, %w {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<1x1x2x2xf32>
  %r = nn.relu %c {name = "relu1"} : (tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32>
  func.return %r : tensor<1x1x2x2xf32>
}

// -----

// conv + clip (relu6): the bounds move to act_min / act_max.
// CHECK-LABEL: func.func @conv_clip
// CHECK:         %c = nn.conv2d %x, %w {name = "conv1", {{.*}}activation = "clip", act_min = 0.000000e+00 : f64, act_max = 6.000000e+00 : f64}
// CHECK-NOT:     nn.clip
func.func @conv_clip(%x: tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32> {
  %w = nn.weight "w" : tensor<1x1x1x1xf32>
  %c = nn.conv2d %x, %w {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<1x1x2x2xf32>
  %r = nn.clip %c {name = "relu6", min = 0.0 : f64, max = 6.0 : f64} : (tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32>
  func.return %r : tensor<1x1x2x2xf32>
}

// -----

// A clip with only an upper bound keeps only act_max.
// CHECK-LABEL: func.func @conv_clip_max_only
// CHECK:         activation = "clip", act_max = 6.000000e+00 : f64}
// CHECK-NOT:     act_min
func.func @conv_clip_max_only(%x: tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32> {
  %w = nn.weight "w" : tensor<1x1x1x1xf32>
  %c = nn.conv2d %x, %w {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<1x1x2x2xf32>
  %r = nn.clip %c {max = 6.0 : f64} : (tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32>
  func.return %r : tensor<1x1x2x2xf32>
}

// -----

// gemm + leaky_relu: alpha moves to act_alpha.
// CHECK-LABEL: func.func @gemm_leaky_relu
// CHECK-NEXT:    %b = nn.weight "b"
// CHECK-NEXT:    %y = nn.gemm %a, %b {name = "fc", {{.*}}activation = "leaky_relu", act_alpha = 1.000000e-01 : f64}
// CHECK-NEXT:    func.return %y
func.func @gemm_leaky_relu(%a: tensor<1x4xf32>) -> tensor<1x3xf32> {
  %b = nn.weight "b" : tensor<4x3xf32>
  %y = nn.gemm %a, %b {name = "fc", trans_a = 0 : i64, trans_b = 0 : i64, alpha = 1.0 : f64, beta = 1.0 : f64} : (tensor<1x4xf32>, tensor<4x3xf32>) -> tensor<1x3xf32>
  %r = nn.leaky_relu %y {name = "lrelu", alpha = 0.1 : f64} : (tensor<1x3xf32>) -> tensor<1x3xf32>
  func.return %r : tensor<1x3xf32>
}

// -----

// Not fused: the conv result has another user; the conv already has an activation
// (a second relu stays a separate op); the relu follows something else.
// CHECK-LABEL: func.func @not_fusable
// CHECK:         %c1 = nn.conv2d %x, %w {name = "conv1", {{[^}]*}}}
// CHECK-NEXT:    %r1 = nn.relu %c1 {name = "relu1"}
// CHECK-NEXT:    %c2 = nn.conv2d %x, %w {name = "conv2", {{.*}}activation = "clip"
// CHECK-NEXT:    %r2 = nn.relu %c2 {name = "relu2"}
// CHECK-NEXT:    %r3 = nn.relu %x {name = "relu3"}
func.func @not_fusable(%x: tensor<1x1x2x2xf32>) -> (tensor<1x1x2x2xf32>, tensor<1x1x2x2xf32>, tensor<1x1x2x2xf32>, tensor<1x1x2x2xf32>) {
  %w = nn.weight "w" : tensor<1x1x1x1xf32>
  %c1 = nn.conv2d %x, %w {name = "conv1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<1x1x2x2xf32>
  %r1 = nn.relu %c1 {name = "relu1"} : (tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32>
  %c2 = nn.conv2d %x, %w {name = "conv2", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, activation = "clip", act_min = 0.0 : f64} : (tensor<1x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<1x1x2x2xf32>
  %r2 = nn.relu %c2 {name = "relu2"} : (tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32>
  %r3 = nn.relu %x {name = "relu3"} : (tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32>
  func.return %r1, %c1, %r2, %r3 : tensor<1x1x2x2xf32>, tensor<1x1x2x2xf32>, tensor<1x1x2x2xf32>, tensor<1x1x2x2xf32>
}
