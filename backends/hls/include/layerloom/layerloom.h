// layerloom HLS library: everything (see docs/hls.md).
#pragma once

#include "conv.h"
#include "eltwise.h"
#include "half.h"
#include "matmul.h"
#include "numeric.h"
#include "pool.h"
#include "quant.h"
#include "shim.h"
#include "window.h"
