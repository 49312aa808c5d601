// RUN: layerloom-opt %s -p 'lower-to-hls{arch=sesl pes=2}' | filecheck %s --check-prefix=SESL
// RUN: layerloom-opt %s -p 'lower-to-hls{arch=seml pes=2}' | filecheck %s --check-prefix=SEML
// RUN: layerloom-opt %s -p 'lower-to-hls{arch=hybrid split=2}' | filecheck %s --check-prefix=HYBRID

// A residual block (pow2): quantize, pointwise conv (relu), 3x3 conv, add (relu) of the two,
// global average pool, flatten, dense, dequantize.

// Arch sesl: one kernel per layer, in program order, joined by streams; the float ports stream;
// the pointwise conv's map is forked (one branch per reader, each holding the whole
// 4 x 4 x 4 map); the flatten of a 4 x 1 x 1 map costs nothing.
// SESL:      dataflow.top @main attributes {arch = "sesl", scheme = "pow2"} {
// SESL-NEXT:   %[[X:.*]] = dataflow.stream {name = "x", shape = array<i64: 2, 4, 4>, depth = 2 : i64, port = "in"} : !dataflow.stream<f32>
// SESL-NEXT:   %[[Q:.*]] = dataflow.stream {name = "x_quantize_out", {{.*}}} : !dataflow.stream<i8>
// SESL-NEXT:   %[[C1:.*]] = dataflow.stream {name = "conv1_out", shape = array<i64: 4, 4, 4>, depth = 4 : i64} : !dataflow.stream<i8>
// SESL-NEXT:   %[[B1:.*]] = dataflow.stream {name = "conv1_out_to_conv2", shape = array<i64: 4, 4, 4>, depth = 64 : i64}
// SESL-NEXT:   %[[B2:.*]] = dataflow.stream {name = "conv1_out_to_add", shape = array<i64: 4, 4, 4>, depth = 64 : i64}
// SESL-NEXT:   %[[C2:.*]] = dataflow.stream {name = "conv2_out"
// SESL-NEXT:   %[[A:.*]] = dataflow.stream {name = "add_out"
// SESL-NEXT:   %[[G:.*]] = dataflow.stream {name = "gap_out", shape = array<i64: 4, 1, 1>
// SESL-NEXT:   %[[F:.*]] = dataflow.stream {name = "fc_out", shape = array<i64: 3>
// SESL-NEXT:   %[[Y:.*]] = dataflow.stream {name = "y", shape = array<i64: 3>, depth = 2 : i64, port = "out"} : !dataflow.stream<f32>
// SESL-NEXT:   dataflow.kernel "quantize" %[[X]] -> %[[Q]] attributes {params = {N = 32 : i64}, pes = 1 : i64, layer = "x_quantize"}
// SESL-NEXT:   ^{{.*}}(%{{.*}}: tensor<1x2x4x4xf32>):
// SESL-NEXT:     %{{.*}} = qnn.quantize
// SESL-NEXT:     dataflow.yield
// SESL:        dataflow.kernel "pointwise_conv2d" %[[Q]] -> %[[C1]] attributes {params = {C = 2 : i64, H = 4 : i64, W = 4 : i64, M = 4 : i64}, pes = 2 : i64, layer = "conv1"}
// SESL-NEXT:   ^{{.*}}(%{{.*}}: tensor<1x2x4x4xi8>):
// SESL-NEXT:     %{{.*}} = nn.weight "conv1.w"
// SESL-NEXT:     %{{.*}} = nn.weight "conv1.b"
// SESL-NEXT:     %{{.*}} = qnn.conv2d
// SESL:        dataflow.kernel "fork" %[[C1]] -> %[[B1]], %[[B2]] attributes {params = {N = 64 : i64, WAYS = 2 : i64}, pes = 1 : i64, layer = "conv1_out_fork"}
// SESL-NEXT:   dataflow.kernel "conv2d" %[[B1]] -> %[[C2]] attributes {params = {C = 4 : i64, H = 4 : i64, W = 4 : i64, KH = 3 : i64, KW = 3 : i64, SH = 1 : i64, SW = 1 : i64, PT = 1 : i64, PL = 1 : i64, PB = 1 : i64, PR = 1 : i64, DH = 1 : i64, DW = 1 : i64, M = 4 : i64, G = 1 : i64}, pes = 2 : i64, layer = "conv2"}
// SESL:        dataflow.kernel "add" %[[B2]], %[[C2]] -> %[[A]] attributes {params = {N = 64 : i64}, pes = 1 : i64, layer = "add"}
// SESL:        dataflow.kernel "global_avg_pool" %[[A]] -> %[[G]] attributes {params = {C = 4 : i64, H = 4 : i64, W = 4 : i64}
// SESL:        dataflow.kernel "dense" %[[G]] -> %[[F]] attributes {params = {K = 4 : i64, N = 3 : i64}, pes = 1 : i64, layer = "fc"}
// SESL:        dataflow.kernel "dequantize" %[[F]] -> %[[Y]]
// SESL-NOT:    func.func

// Arch seml: the layers run on reused engines (one per kind) from a schedule of invokes on
// feature-map slots; the skip map keeps a third slot; DDR offsets accumulate (conv1:
// 4 x 2 weights, 5 x 4 parameters; conv2: 4 x 36; the average pool: one set, 2 words).
// SEML:      %[[D:.*]] = dataflow.buffer {name = "x_quantize_to_reused", kind = "double", size = 32 : i64} : !dataflow.buffer<i8>
// SEML-NEXT: dataflow.kernel "stream_to_buffer" %{{.*}} -> %[[D]]
// SEML-NEXT: %[[O:.*]] = dataflow.stream {name = "fc_out"
// SEML-NEXT: dataflow.engine @conv {kind = "conv", pes = 2 : i64, limits = {MAX_M = 4 : i64, MAX_K = 36 : i64}}
// SEML-NEXT: dataflow.engine @add {kind = "add", pes = 2 : i64, limits = {}}
// SEML-NEXT: dataflow.engine @pool {kind = "pool", pes = 2 : i64, limits = {MAX_SETS = 1 : i64}}
// SEML-NEXT: dataflow.schedule %[[D]] -> %[[O]] attributes {slot_size = 64 : i64}
// SEML-NEXT:   %[[S0:.*]] = dataflow.buffer {name = "slot0", kind = "slot", size = 64 : i64}
// SEML-NEXT:   %[[S1:.*]] = dataflow.buffer {name = "slot1", kind = "slot", size = 64 : i64}
// SEML-NEXT:   %[[S2:.*]] = dataflow.buffer {name = "slot2", kind = "slot", size = 64 : i64}
// SEML-NEXT:   dataflow.kernel "buffer_copy" %[[D]] -> %[[S0]]
// SEML-NEXT:   dataflow.invoke @conv %[[S0]] -> %[[S1]] attributes {step = {C = 2 : i64, H = 4 : i64, W = 4 : i64, KH = 1 : i64, {{.*}}M = 4 : i64, G = 1 : i64, OH = 4 : i64, OW = 4 : i64, zx = 0 : i64, zw = 0 : i64, zy = 0 : i64, lo = 0 : i64, hi = 127 : i64, leaky = 0 : i64}, layer = "conv1", weights_offset = 0 : i64, params_offset = 0 : i64}
// SEML:        dataflow.invoke @conv %[[S1]] -> %[[S0]] attributes {{{.*}}layer = "conv2", weights_offset = 8 : i64, params_offset = 20 : i64}
// SEML:        dataflow.invoke @add %[[S1]], %[[S0]] -> %[[S2]] attributes {{{.*}}layer = "add", weights_offset = 152 : i64, params_offset = 40 : i64}
// SEML:        dataflow.invoke @pool %[[S2]] -> %[[S0]] attributes {step = {{{.*}}avg = 1 : i64, {{.*}}first_count = 16 : i64{{.*}}}, layer = "gap"
// SEML:        dataflow.invoke @conv %[[S0]] -> %[[S1]] attributes {{{.*}}layer = "fc", weights_offset = 152 : i64, params_offset = 42 : i64}
// SEML:        dataflow.kernel "buffer_to_stream" %[[S1]] -> %[[O]]
// SEML:      dataflow.kernel "dequantize" %[[O]] -> %{{.*}}

// Arch hybrid with split 2: the two convs on the pipeline, the rest reused; both maps the
// reused engines read (the skip and conv2's) cross through double buffers.
// HYBRID:      dataflow.kernel "pointwise_conv2d" {{.*}}pes = 1 : i64, layer = "conv1"
// HYBRID:      dataflow.kernel "fork" %{{.*}} -> %[[TOCONV:.*]], %[[TOREUSED:.*]] attributes
// HYBRID-NEXT: dataflow.kernel "conv2d" %[[TOCONV]] -> %[[C2:[^ ]*]] attributes
// HYBRID:      %[[D1:.*]] = dataflow.buffer {name = "conv1_to_reused", kind = "double", size = 64 : i64}
// HYBRID-NEXT: dataflow.kernel "stream_to_buffer" %[[TOREUSED]] -> %[[D1]]
// HYBRID-NEXT: %[[D2:.*]] = dataflow.buffer {name = "conv2_to_reused", kind = "double", size = 64 : i64}
// HYBRID-NEXT: dataflow.kernel "stream_to_buffer" %[[C2]] -> %[[D2]]
// HYBRID:      dataflow.schedule %[[D1]], %[[D2]] -> %{{.*}} attributes {slot_size = 64 : i64}
// HYBRID-NOT:  dataflow.invoke @conv {{.*}}layer = "conv2"
// HYBRID:      dataflow.invoke @add
func.func @main(%x: tensor<1x2x4x4xf32> {nn.name = "x"}) -> (tensor<1x3xf32> {nn.name = "y"}) {
  %q = qnn.quantize %x {scale = 3.125000e-02 : f64, zero_point = 0 : i64, name = "x.quantize"} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xi8>
  %w1 = nn.weight "conv1.w" {name = "conv1"} : tensor<4x2x1x1xi8>
  %b1 = nn.weight "conv1.b" {name = "conv1"} : tensor<4xi32>
  %c1 = qnn.conv2d %q, %w1, %b1 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, input_scale = 3.125000e-02 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 0.001953125, 7.812500e-03, 7.812500e-03, 1.562500e-02>, scale = 3.125000e-02 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 9, 7, 7, 6>, activation = "relu", clamp_min = 0 : i64, name = "conv1"} : (tensor<1x2x4x4xi8>, tensor<4x2x1x1xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
  %w2 = nn.weight "conv2.w" {name = "conv2"} : tensor<4x4x3x3xi8>
  %b2 = nn.weight "conv2.b" {name = "conv2"} : tensor<4xi32>
  %c2 = qnn.conv2d %c1, %w2, %b2 {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, input_scale = 3.125000e-02 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 7.812500e-03, 7.812500e-03, 7.812500e-03, 7.812500e-03>, scale = 6.250000e-02 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 8, 8, 8, 8>, name = "conv2"} : (tensor<1x4x4x4xi8>, tensor<4x4x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
  %a = qnn.add %c1, %c2 {input_scales = array<f64: 3.125000e-02, 6.250000e-02>, input_zero_points = array<i64: 0, 0>, scheme = "pow2", operand_shifts = array<i64: 0, -1>, shifts = array<i64: 1>, scale = 6.250000e-02 : f64, zero_point = 0 : i64, activation = "relu", clamp_min = 0 : i64, name = "add"} : (tensor<1x4x4x4xi8>, tensor<1x4x4x4xi8>) -> tensor<1x4x4x4xi8>
  %g = qnn.global_pool %a {kind = "avg", input_scale = 6.250000e-02 : f64, input_zero_point = 0 : i64, scale = 1.562500e-02 : f64, zero_point = 0 : i64, scheme = "pow2", multipliers = array<i64: 1>, shifts = array<i64: 2>, name = "gap"} : (tensor<1x4x4x4xi8>) -> tensor<1x4x1x1xi8>
  %f = nn.reshape %g {name = "flatten"} : (tensor<1x4x1x1xi8>) -> tensor<1x4xi8>
  %w3 = nn.weight "fc.w" {name = "fc"} : tensor<3x4xi8>
  %b3 = nn.weight "fc.b" {name = "fc"} : tensor<3xi32>
  %d = qnn.gemm %f, %w3, %b3 {trans_b = 1 : i64, input_scale = 1.562500e-02 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 3.906250e-03, 1.562500e-02, 1.562500e-02>, scale = 3.125000e-02 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 9, 7, 7>, name = "fc"} : (tensor<1x4xi8>, tensor<3x4xi8>, tensor<3xi32>) -> tensor<1x3xi8>
  %y = qnn.dequantize %d {scale = 3.125000e-02 : f64, zero_point = 0 : i64, name = "fc.dequantize"} : (tensor<1x3xi8>) -> tensor<1x3xf32>
  func.return %y : tensor<1x3xf32>
}
