// RUN: layerloom-opt %s --split-input-file -p canonicalize | filecheck %s

// nn.identity (ONNX Identity / Dropout) disappears; its users read its input.
// CHECK-LABEL: func.func @identity
// CHECK-NEXT:    %r = nn.relu %x {name = "relu"}
// CHECK-NEXT:    func.return %r, %x
func.func @identity(%x: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>) {
  %i = nn.identity %x {name = "dropout"} : (tensor<2xf32>) -> tensor<2xf32>
  %r = nn.relu %i {name = "relu"} : (tensor<2xf32>) -> tensor<2xf32>
  func.return %r, %i : tensor<2xf32>, tensor<2xf32>
}

// -----

// Ops on weights only are evaluated into new weights, through a chain of ops; the new
// weight carries the folded op's name. The unused weight and the dead relu go.
// CHECK-LABEL: func.func @fold_constants
// CHECK-NEXT:    %s = nn.weight "scale" {name = "scale", value = dense<{{\[\[}}3.000000e+00, 5.000000e+00], [7.000000e+00, 9.000000e+00]]> : tensor<2x2xf32>} : tensor<2x2xf32>
// CHECK-NEXT:    %y = nn.mul %x, %s {name = "apply"}
// CHECK-NEXT:    func.return %y
func.func @fold_constants(%x: tensor<2x2xf32>) -> tensor<2x2xf32> {
  %a = nn.weight "a" {value = dense<[1.0, 2.0, 3.0, 4.0]> : tensor<4xf32>} : tensor<4xf32>
  %two = nn.weight "two" {value = dense<2.0> : tensor<4xf32>} : tensor<4xf32>
  %one = nn.weight "one" {value = dense<1.0> : tensor<2x2xf32>} : tensor<2x2xf32>
  %unused = nn.weight "unused" {value = dense<0.0> : tensor<7xf32>} : tensor<7xf32>
  %m = nn.mul %a, %two {name = "double"} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %r = nn.reshape %m {name = "square"} : (tensor<4xf32>) -> tensor<2x2xf32>
  %s = nn.add %r, %one {name = "scale"} : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
  %dead = nn.relu %x {name = "dead"} : (tensor<2x2xf32>) -> tensor<2x2xf32>
  %y = nn.mul %x, %s {name = "apply"} : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
  func.return %y : tensor<2x2xf32>
}

// -----

// A multi-result op on a weight becomes one weight per result.
// CHECK-LABEL: func.func @fold_split
// CHECK-DAG:     nn.weight "halves.0" {name = "halves", value = dense<[1.000000e+00, 2.000000e+00]> : tensor<2xf32>}
// CHECK-DAG:     nn.weight "halves.1" {name = "halves", value = dense<[3.000000e+00, 4.000000e+00]> : tensor<2xf32>}
// CHECK-NOT:     nn.split
func.func @fold_split() -> (tensor<2xf32>, tensor<2xf32>) {
  %a = nn.weight "a" {value = dense<[1.0, 2.0, 3.0, 4.0]> : tensor<4xf32>} : tensor<4xf32>
  %p, %q = nn.split %a {name = "halves", axis = 0 : i64} : (tensor<4xf32>) -> (tensor<2xf32>, tensor<2xf32>)
  func.return %p, %q : tensor<2xf32>, tensor<2xf32>
}

// -----

// An op with an operand that is not a weight is not folded; a weight without data (its
// handle is not in the store) is left alone too.
// CHECK-LABEL: func.func @no_fold
// CHECK-NEXT:    %w = nn.weight "w" {value = dense<1.000000e+00> : tensor<2xf32>} : tensor<2xf32>
// CHECK-NEXT:    %y = nn.add %x, %w {name = "add"}
// CHECK-NEXT:    %e = nn.weight "external" : tensor<2xf32>
// CHECK-NEXT:    %z = nn.relu %e {name = "relu"}
func.func @no_fold(%x: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>) {
  %w = nn.weight "w" {value = dense<1.0> : tensor<2xf32>} : tensor<2xf32>
  %y = nn.add %x, %w {name = "add"} : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %e = nn.weight "external" : tensor<2xf32>
  %z = nn.relu %e {name = "relu"} : (tensor<2xf32>) -> tensor<2xf32>
  func.return %y, %z : tensor<2xf32>, tensor<2xf32>
}

// -----

// reshape(reshape(x)) is one reshape, which keeps the outer one's name; a reshape to the
// same shape is removed.
// CHECK-LABEL: func.func @reshapes
// CHECK-NEXT:    %r2 = nn.reshape %x {name = "r2"} : (tensor<1x6xf32>) -> tensor<2x3xf32>
// CHECK-NEXT:    func.return %r2, %x
func.func @reshapes(%x: tensor<1x6xf32>) -> (tensor<2x3xf32>, tensor<1x6xf32>) {
  %r1 = nn.reshape %x {name = "r1"} : (tensor<1x6xf32>) -> tensor<6xf32>
  %r2 = nn.reshape %r1 {name = "r2"} : (tensor<6xf32>) -> tensor<2x3xf32>
  %same = nn.reshape %x {name = "same"} : (tensor<1x6xf32>) -> tensor<1x6xf32>
  func.return %r2, %same : tensor<2x3xf32>, tensor<1x6xf32>
}

// -----

// The inner reshape stays when something else uses it.
// CHECK-LABEL: func.func @reshape_shared
// CHECK-NEXT:    %r1 = nn.reshape %x {name = "r1"} : (tensor<1x6xf32>) -> tensor<6xf32>
// CHECK-NEXT:    %r2 = nn.reshape %x {name = "r2"} : (tensor<1x6xf32>) -> tensor<2x3xf32>
// CHECK-NEXT:    func.return %r2, %r1
func.func @reshape_shared(%x: tensor<1x6xf32>) -> (tensor<2x3xf32>, tensor<6xf32>) {
  %r1 = nn.reshape %x {name = "r1"} : (tensor<1x6xf32>) -> tensor<6xf32>
  %r2 = nn.reshape %r1 {name = "r2"} : (tensor<6xf32>) -> tensor<2x3xf32>
  func.return %r2, %r1 : tensor<2x3xf32>, tensor<6xf32>
}

// -----

// transpose(transpose(x, p), q) = transpose(x, [p[q[0]], p[q[1]], ...]); permutations
// that cancel leave nothing.
// CHECK-LABEL: func.func @transposes
// CHECK-NEXT:    %t2 = nn.transpose %x {name = "t2", perm = array<i64: 1, 2, 0>} : (tensor<2x3x4xf32>) -> tensor<3x4x2xf32>
// CHECK-NEXT:    func.return %t2, %x
func.func @transposes(%x: tensor<2x3x4xf32>) -> (tensor<3x4x2xf32>, tensor<2x3x4xf32>) {
  %t1 = nn.transpose %x {name = "t1", perm = array<i64: 1, 0, 2>} : (tensor<2x3x4xf32>) -> tensor<3x2x4xf32>
  %t2 = nn.transpose %t1 {name = "t2", perm = array<i64: 0, 2, 1>} : (tensor<3x2x4xf32>) -> tensor<3x4x2xf32>
  %u1 = nn.transpose %x {name = "u1", perm = array<i64: 1, 2, 0>} : (tensor<2x3x4xf32>) -> tensor<3x4x2xf32>
  %u2 = nn.transpose %u1 {name = "u2", perm = array<i64: 2, 0, 1>} : (tensor<3x4x2xf32>) -> tensor<2x3x4xf32>
  func.return %t2, %u2 : tensor<3x4x2xf32>, tensor<2x3x4xf32>
}
