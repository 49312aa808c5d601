// RUN: layerloom-opt %s --split-input-file --verify-diagnostics | filecheck %s

// The dataflow dialect's verifiers: a FIFO has one writer and one reader, a reused engine
// runs only the layers of its kind, sizes and kinds are checked.

// CHECK: dataflow.top @main: stream 'x' has 0 writers and 2 readers, expected 0 and 1
dataflow.top @main attributes {arch = "sesl", scheme = "pow2"} {
  %x = dataflow.stream {name = "x", shape = array<i64: 4>, depth = 2 : i64, port = "in"} : !dataflow.stream<i8>
  %y = dataflow.stream {name = "y", shape = array<i64: 4>, depth = 2 : i64, port = "out"} : !dataflow.stream<i8>
  %z = dataflow.stream {name = "z", shape = array<i64: 4>, depth = 2 : i64, port = "out"} : !dataflow.stream<i8>
  dataflow.kernel "fork" %x -> %y attributes {params = {N = 4 : i64}, pes = 1 : i64} : !dataflow.stream<i8> -> !dataflow.stream<i8>
  dataflow.kernel "fork" %x -> %z attributes {params = {N = 4 : i64}, pes = 1 : i64} : !dataflow.stream<i8> -> !dataflow.stream<i8>
}

// -----

// CHECK: dataflow.stream 'x': depth must be positive, got 0
dataflow.top @main attributes {arch = "sesl", scheme = "pow2"} {
  %x = dataflow.stream {name = "x", shape = array<i64: 4>, depth = 0 : i64, port = "in"} : !dataflow.stream<i8>
}

// -----

// CHECK: dataflow.buffer 'b': kind 'triple' is not one of double, slot
dataflow.top @main attributes {arch = "seml", scheme = "pow2"} {
  %b = dataflow.buffer {name = "b", kind = "triple", size = 4 : i64} : !dataflow.buffer<i8>
}

// -----

// CHECK: dataflow.top @main: arch 'sesml' is not one of sesl, seml, hybrid
dataflow.top @main attributes {arch = "sesml", scheme = "pow2"} {
  %x = dataflow.stream {name = "x", shape = array<i64: 4>, depth = 2 : i64, port = "in"} : !dataflow.stream<i8>
}

// -----

// CHECK: dataflow.invoke 'p': engine @add (add) cannot run qnn.pool
dataflow.top @main attributes {arch = "seml", scheme = "pow2"} {
  %x = dataflow.stream {name = "x", shape = array<i64: 1, 2, 2>, depth = 2 : i64, port = "in"} : !dataflow.stream<i8>
  %y = dataflow.stream {name = "y", shape = array<i64: 1, 1, 1>, depth = 2 : i64, port = "out"} : !dataflow.stream<i8>
  %d = dataflow.buffer {name = "d", kind = "double", size = 4 : i64} : !dataflow.buffer<i8>
  dataflow.kernel "stream_to_buffer" %x -> %d attributes {params = {N = 4 : i64}, pes = 1 : i64} : !dataflow.stream<i8> -> !dataflow.buffer<i8>
  dataflow.engine @add {kind = "add", pes = 1 : i64, limits = {}}
  dataflow.schedule %d -> %y attributes {slot_size = 4 : i64} : !dataflow.buffer<i8> -> !dataflow.stream<i8> {
    %s0 = dataflow.buffer {name = "slot0", kind = "slot", size = 4 : i64} : !dataflow.buffer<i8>
    %s1 = dataflow.buffer {name = "slot1", kind = "slot", size = 4 : i64} : !dataflow.buffer<i8>
    dataflow.kernel "buffer_copy" %d -> %s0 attributes {params = {N = 4 : i64}, pes = 1 : i64} : !dataflow.buffer<i8> -> !dataflow.buffer<i8>
    dataflow.invoke @add %s0 -> %s1 attributes {step = {}, layer = "p", weights_offset = 0 : i64, params_offset = 0 : i64} : !dataflow.buffer<i8> -> !dataflow.buffer<i8> {
    ^bb0(%a : tensor<1x1x2x2xi8>):
      %p = qnn.pool %a {kind = "max", kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64, count_include_pad = 0 : i64, input_scale = 1.0 : f64, input_zero_point = 0 : i64, scale = 1.0 : f64, zero_point = 0 : i64} : (tensor<1x1x2x2xi8>) -> tensor<1x1x1x1xi8>
      dataflow.yield %p : tensor<1x1x1x1xi8>
    }
    dataflow.kernel "buffer_to_stream" %s1 -> %y attributes {params = {N = 1 : i64}, pes = 1 : i64} : !dataflow.buffer<i8> -> !dataflow.stream<i8>
  }
}

// -----

// CHECK: dataflow.kernel 'c': the payload takes 2 tensors for 1 inputs
dataflow.top @main attributes {arch = "sesl", scheme = "pow2"} {
  %x = dataflow.stream {name = "x", shape = array<i64: 4>, depth = 2 : i64, port = "in"} : !dataflow.stream<i8>
  %y = dataflow.stream {name = "y", shape = array<i64: 4>, depth = 2 : i64, port = "out"} : !dataflow.stream<i8>
  dataflow.kernel "add" %x -> %y attributes {params = {N = 4 : i64}, pes = 1 : i64, layer = "c"} : !dataflow.stream<i8> -> !dataflow.stream<i8> {
  ^bb0(%a : tensor<1x4xi8>, %b : tensor<1x4xi8>):
    %s = qnn.add %a, %b {input_scales = array<f64: 1.0, 1.0>, input_zero_points = array<i64: 0, 0>, scheme = "pow2", operand_shifts = array<i64: 0, 0>, shifts = array<i64: 0>, scale = 1.0 : f64, zero_point = 0 : i64} : (tensor<1x4xi8>, tensor<1x4xi8>) -> tensor<1x4xi8>
    dataflow.yield %s : tensor<1x4xi8>
  }
}
