// RUN: layerloom-opt %s -p lower-to-dpu --weights-out %t.npz | filecheck %s
// RUN: layerloom-opt %s -p 'assign-engines{arch=seml hw=zcu102-dpu},tile,plan-memory,lower-to-dpu' --weights-out %t.npz | filecheck %s
// RUN: layerloom-opt %s -p 'lower-to-dpu{hw=dpu-b512}' --weights-out %t.npz | filecheck %s --check-prefix=B512

// A small pow2 network (quantize output of the ONNX model conv1 1x1 + relu, conv2 3x3,
// residual add + relu, 2x2 max pool, conv3 1x1, concat of conv3 and the pool, global
// average pool, flatten, dense) lowered to one DPU program. The mapped module (second RUN)
// lowers to the same program: the accel mapping is unwrapped, tiles follow the DPU's banks.

// The program: configuration, region sizes, interface (HWC maps, their base register,
// offset, strides and scale).
// CHECK:      dpu.program @dpu attributes {hw = "zcu102-dpu", arch = "B4096", pp = 8 : i64, icp = 16 : i64, ocp = 16 : i64, bank_num = 8 : i64, bank_depth = 2048 : i64, cores = 3 : i64, weights = 3352 : i64, work = 528 : i64,
// CHECK-SAME:   inputs = [{reg = "input", offset = 0 : i64, shape = array<i64: 6, 6, 2>, strides = array<i64: 12, 2>, scale = 3.125000e-02 : f64}],
// CHECK-SAME:   outputs = [{reg = "output", offset = 0 : i64, shape = array<i64: 1, 1, 3>, strides = array<i64: 3, 3>, scale = 1.250000e-01 : f64}]} {

// conv1: weights (one 256-byte word) and 4 bias records from the weights region, the input
// tile from `input`, one CONV, the output to `work` + 0. Only the last LOAD signals: the
// load queue runs in order. The CONV signals load too: the next layer's weights overwrite
// words it reads (double-buffer WAR).
// CHECK:      dpu.layer "conv1" attributes {kind = "conv", output = {reg = "work", offset = 0 : i64, shape = array<i64: 6, 6, 4>, strides = array<i64: 24, 4>, scale = 6.250000e-02 : f64}, tile = array<i64: 6, 6, 4>, model_cycles = 348 : i64} {
// CHECK-NEXT:   dpu.convinit kernel_h=1 kernel_w=1 act=relu
// CHECK-NEXT:   dpu.load mem=weights addr=0x0 reg=weights offset=0x0 rows=1 cols=1 chans=256 row_stride=0 col_stride=256
// CHECK-NEXT:   dpu.load mem=bias addr=0x0 reg=weights offset=0x100 rows=1 cols=4 chans=8 row_stride=0 col_stride=8
// CHECK-NEXT:   dpu.load signal=compute addr=0x0 reg=input offset=0x0 rows=6 cols=6 chans=2 row_stride=12 col_stride=2
// CHECK-NEXT:   dpu.conv wait=load signal=load|save bank_in=0 addr_in=0x0 bank_out=2 addr_out=0x0 addr_w=0x0 addr_bias=0x0 out_rows=6 out_cols=6 ic=2 oc=4
// CHECK-NEXT:   dpu.save wait=compute signal=load bank=2 addr=0x0 reg=work offset=0x0 rows=6 cols=6 chans=4 row_stride=24 col_stride=4
// CHECK-NEXT: }

// conv2 reads conv1's map after its SAVE (RAW through DDR: SAVE signal=load, LOAD wait=save);
// the LOAD pads the 3x3 convolution's border.
// CHECK:      dpu.layer "conv2" attributes {kind = "conv", output = {reg = "work", offset = 192 : i64
// CHECK-NEXT:   dpu.convinit kernel_h=3 kernel_w=3
// CHECK:        dpu.load wait=save signal=compute addr=0x0 reg=work offset=0x0 rows=6 cols=6 chans=4 row_stride=24 col_stride=4 pad_top=1 pad_bottom=1 pad_left=1 pad_right=1
// CHECK-NEXT:   dpu.conv wait=load signal=load|save

// The residual add: operand b in bank 4, ReLU fused.
// CHECK:      dpu.layer "add" attributes {kind = "eltwise", output = {reg = "work", offset = 384 : i64
// CHECK-NEXT:   dpu.elewinit act=relu
// CHECK-NEXT:   dpu.load wait=compute addr=0x0 reg=work offset=0x0
// CHECK-NEXT:   dpu.load wait=save signal=compute bank=4 addr=0x0 reg=work offset=0xc0
// CHECK-NEXT:   dpu.elew wait=load signal=save bank_a=0 addr_a=0x0 bank_b=4 addr_b=0x0 bank_out=2 addr_out=0x0 out_rows=6 out_cols=6 chans=4

// Liveness: conv1's bytes (work + 0) are dead after the add, so the pool's map reuses them.
// A max pool's LOAD pads with -128 (here it has no padding to write).
// CHECK:      dpu.layer "pool" attributes {kind = "pool", output = {reg = "work", offset = 0 : i64, shape = array<i64: 3, 3, 4>
// CHECK-NEXT:   dpu.poolinit kernel_h=2 kernel_w=2 kind=max stride_h=2 stride_w=2
// CHECK-NEXT:   dpu.load wait=save signal=compute addr=0x0 reg=work offset=0x180 rows=6 cols=6 chans=4 row_stride=24 col_stride=4 pad_value=-128

// Concat by placement: conv3 (at the concat's scale) SAVEs straight into channels 0-3 of
// the 3x3x8 concatenation (pixel stride 8); the pool's map, at another scale, is rescaled
// by ELEW (inputs=1, shift 1) into channels 4-7.
// CHECK:      dpu.layer "conv3" attributes {kind = "conv", output = {reg = "work", offset = 64 : i64, shape = array<i64: 3, 3, 4>, strides = array<i64: 24, 8>
// CHECK:        dpu.save wait=compute signal=compute bank=2 addr=0x0 reg=work offset=0x40 rows=3 cols=3 chans=4 row_stride=24 col_stride=8
// CHECK:      dpu.layer "concat" attributes {kind = "concat", output = {reg = "work", offset = 64 : i64, shape = array<i64: 3, 3, 8>, strides = array<i64: 24, 8>
// CHECK-NEXT:   dpu.elewinit inputs=1 shift_out=1
// CHECK-NEXT:   dpu.load wait=compute signal=compute addr=0x0 reg=work offset=0x0 rows=3 cols=3 chans=4 row_stride=12 col_stride=4
// CHECK-NEXT:   dpu.elew
// CHECK-NEXT:   dpu.save wait=compute signal=load bank=2 addr=0x0 reg=work offset=0x44 rows=3 cols=3 chans=4 row_stride=24 col_stride=8

// Global average pooling: one POOL over the whole 3x3 window, its divisor record loaded.
// CHECK:      dpu.layer "gap" attributes {kind = "pool"
// CHECK-NEXT:   dpu.poolinit kernel_h=3 kernel_w=3 kind=avg count_pad=1
// CHECK-NEXT:   dpu.load mem=bias

// The flatten is a view (no instructions); the dense layer is a 1x1 CONV over the 1x1x8
// map, whose CONVINIT is left out: conv3's configuration (1x1, no activation) is in force.
// Its output goes to the `output` region.
// CHECK:      dpu.layer "flatten" attributes {kind = "view", output = {reg = "work", offset = 0 : i64, shape = array<i64: 1, 1, 8>
// CHECK-NEXT: }
// CHECK-NEXT: dpu.layer "fc" attributes {kind = "conv", output = {reg = "output", offset = 0 : i64, shape = array<i64: 1, 1, 3>
// CHECK-NOT:    dpu.convinit
// CHECK:        dpu.conv wait=load signal=save bank_in=0 addr_in=0x0 bank_out=2 addr_out=0x0 addr_w=0x0 addr_bias=0x0 out_rows=1 out_cols=1 ic=8 oc=3
// CHECK-NEXT:   dpu.save wait=compute bank=2 addr=0x0 reg=output offset=0x0 rows=1 cols=1 chans=3 row_stride=3 col_stride=3
// CHECK-NEXT: }
// CHECK-NEXT: dpu.end

// @main: the input's quantize and the output's dequantize stay on the host, around one
// dpu.run that takes the weights region as an operand.
// CHECK:      func.func @main(%0: tensor<1x2x6x6xf32> {nn.name = "x"}) -> (tensor<1x3xf32> {nn.name = "y"}) {
// CHECK-NEXT:   %1 = qnn.quantize %0
// CHECK-NEXT:   %2 = nn.weight "dpu.weights" {name = "dpu"} : tensor<3352xui8>
// CHECK-NEXT:   %3 = dpu.run @dpu(%1, %2) : (tensor<1x2x6x6xi8>, tensor<3352xui8>) -> tensor<1x3xi8>
// CHECK-NEXT:   %4 = qnn.dequantize %3
// CHECK-NEXT:   func.return %4 : tensor<1x3xf32>
// CHECK-NOT:  accel.

// On B512 (ICP = OCP = 8, one core) a weights word is 64 bytes.
// B512:       dpu.program @dpu attributes {hw = "dpu-b512", arch = "B512", pp = 4 : i64, icp = 8 : i64, ocp = 8 : i64, bank_num = 8 : i64, bank_depth = 2048 : i64, cores = 1 : i64
// B512:         dpu.load mem=weights addr=0x0 reg=weights offset=0x0 rows=1 cols=1 chans=64 row_stride=0 col_stride=64

builtin.module {
  func.func @main(%0: tensor<1x2x6x6xf32> {nn.name = "x"}) -> (tensor<1x3xf32> {nn.name = "y"}) {
    %1 = qnn.quantize %0 {scale = 3.125000e-02 : f64, zero_point = 0 : i64, name = "x.quantize"} : (tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xi8>
    %2 = nn.weight "conv1.q" {name = "conv1", value = dense<[[[[65]], [[-82]]], [[[54]], [[-73]]], [[[-116]], [[-55]]], [[[-65]], [[-7]]]]> : tensor<4x2x1x1xi8>} : tensor<4x2x1x1xi8>
    %3 = nn.weight "conv1.q_1" {name = "conv1", value = dense<[-89, 1361, 185, -36]> : tensor<4xi32>} : tensor<4xi32>
    %4 = qnn.conv2d %1, %2, %3 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, input_scale = 3.125000e-02 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 3.125000e-02, 7.812500e-03, 3.906250e-03, 3.125000e-02>, scale = 6.250000e-02 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 6, 8, 9, 6>, activation = "relu", clamp_min = 0 : i64, name = "conv1"} : (tensor<1x2x6x6xi8>, tensor<4x2x1x1xi8>, tensor<4xi32>) -> tensor<1x4x6x6xi8>
    %5 = nn.weight "conv2.q" {name = "conv2", value = dense<"0xF8ECE0F40FF91DFA012F10F1FA103AF8F91EE5F71B120314AB1FE3CE0815F3E001FE2A170622FAE41212FAE807B5150FCF02E317C3E41523BFF10AEE30DC0BE02AFFF5CC331717220BEDE8E829D4EEF60711DACC00251707F609F919E804FD10074D2D2DC2F6EE10BB2320D9E2E801133EFA1705351629DFFAE72D14F7F20FEBE40F4AF9EFDDD8101A000A0304D2F203"> : tensor<4x4x3x3xi8>} : tensor<4x4x3x3xi8>
    %6 = nn.weight "conv2.q_1" {name = "conv2", value = dense<[-160, -98, -168, -68]> : tensor<4xi32>} : tensor<4xi32>
    %7 = qnn.conv2d %4, %5, %6 {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, input_scale = 6.250000e-02 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 7.812500e-03, 7.812500e-03, 7.812500e-03, 7.812500e-03>, scale = 6.250000e-02 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 7, 7, 7, 7>, name = "conv2"} : (tensor<1x4x6x6xi8>, tensor<4x4x3x3xi8>, tensor<4xi32>) -> tensor<1x4x6x6xi8>
    %8 = qnn.add %4, %7 {input_scales = array<f64: 6.250000e-02, 6.250000e-02>, input_zero_points = array<i64: 0, 0>, scheme = "pow2", operand_shifts = array<i64: 0, 0>, shifts = array<i64: 0>, scale = 6.250000e-02 : f64, zero_point = 0 : i64, activation = "relu", clamp_min = 0 : i64, name = "add"} : (tensor<1x4x6x6xi8>, tensor<1x4x6x6xi8>) -> tensor<1x4x6x6xi8>
    %9 = qnn.pool %8 {kind = "max", kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64, count_include_pad = 0 : i64, name = "pool", input_scale = 6.250000e-02 : f64, input_zero_point = 0 : i64, scale = 6.250000e-02 : f64, zero_point = 0 : i64} : (tensor<1x4x6x6xi8>) -> tensor<1x4x3x3xi8>
    %10 = nn.weight "conv3.q" {name = "conv3", value = dense<[[[[77]], [[-37]], [[-14]], [[74]]], [[[29]], [[77]], [[-95]], [[39]]], [[[-44]], [[12]], [[76]], [[98]]], [[[47]], [[7]], [[73]], [[-13]]]]> : tensor<4x4x1x1xi8>} : tensor<4x4x1x1xi8>
    %11 = nn.weight "conv3.q_1" {name = "conv3", value = dense<[-29, 82, -113, 221]> : tensor<4xi32>} : tensor<4xi32>
    %12 = qnn.conv2d %9, %10, %11 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, input_scale = 6.250000e-02 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 7.812500e-03, 1.562500e-02, 7.812500e-03, 1.562500e-02>, scale = 1.250000e-01 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 8, 7, 8, 7>, name = "conv3"} : (tensor<1x4x3x3xi8>, tensor<4x4x1x1xi8>, tensor<4xi32>) -> tensor<1x4x3x3xi8>
    %13 = qnn.concat %12, %9 {input_scales = array<f64: 1.250000e-01, 6.250000e-02>, input_zero_points = array<i64: 0, 0>, scheme = "pow2", shifts = array<i64: 0, 1>, scale = 1.250000e-01 : f64, zero_point = 0 : i64, axis = 1 : i64, name = "concat"} : (tensor<1x4x3x3xi8>, tensor<1x4x3x3xi8>) -> tensor<1x8x3x3xi8>
    %14 = qnn.global_pool %13 {kind = "avg", input_scale = 1.250000e-01 : f64, input_zero_point = 0 : i64, scale = 6.250000e-02 : f64, zero_point = 0 : i64, scheme = "pow2", multipliers = array<i64: 58254>, shifts = array<i64: 18>, name = "gap"} : (tensor<1x8x3x3xi8>) -> tensor<1x8x1x1xi8>
    %15 = nn.reshape %14 {name = "flatten"} : (tensor<1x8x1x1xi8>) -> tensor<1x8xi8>
    %16 = nn.weight "fc.q" {name = "fc", value = dense<[[33, 70, -1, -12, 5, 24, -19, 12], [-1, 103, -42, 67, -41, -61, -45, -76], [9, 66, 11, 40, 104, 17, 12, -18]]> : tensor<3x8xi8>} : tensor<3x8xi8>
    %17 = nn.weight "fc.q_1" {name = "fc", value = dense<[-165, 156, -360]> : tensor<3xi32>} : tensor<3xi32>
    %18 = qnn.gemm %15, %16, %17 {trans_b = 1 : i64, input_scale = 6.250000e-02 : f64, input_zero_point = 0 : i64, weight_scales = array<f64: 1.562500e-02, 7.812500e-03, 7.812500e-03>, scale = 1.250000e-01 : f64, zero_point = 0 : i64, scheme = "pow2", shifts = array<i64: 7, 8, 8>, name = "fc"} : (tensor<1x8xi8>, tensor<3x8xi8>, tensor<3xi32>) -> tensor<1x3xi8>
    %19 = qnn.dequantize %18 {scale = 1.250000e-01 : f64, zero_point = 0 : i64, name = "fc.dequantize"} : (tensor<1x3xi8>) -> tensor<1x3xf32>
    func.return %19 : tensor<1x3xf32>
  }
}
