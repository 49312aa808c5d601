// A 3x3 convolution (with a fused ReLU) and a 1x1 one, for `layerloom-opt -p winograd-conv`.
builtin.module {
  func.func @main(%x: tensor<1x1x6x6xf32> {nn.name = "x"}) -> (tensor<1x2x6x6xf32> {nn.name = "y"}) {
    %w = nn.weight "conv3x3.w" {value = dense<[[[[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]]]> : tensor<1x1x3x3xf32>} : tensor<1x1x3x3xf32>
    %a = nn.conv2d %x, %w {name = "conv3x3", strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, activation = "relu"} : (tensor<1x1x6x6xf32>, tensor<1x1x3x3xf32>) -> tensor<1x1x6x6xf32>
    %v = nn.weight "conv1x1.w" {value = dense<[[[[0.5]]], [[[-0.5]]]]> : tensor<2x1x1x1xf32>} : tensor<2x1x1x1xf32>
    %y = nn.conv2d %a, %v {name = "conv1x1", strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : (tensor<1x1x6x6xf32>, tensor<2x1x1x1xf32>) -> tensor<1x2x6x6xf32>
    func.return %y : tensor<1x2x6x6xf32>
  }
}
