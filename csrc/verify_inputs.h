// SGLang's verify inputs of a built draft tree: arguments and launcher.
// Plain CUDA runtime types only, so that verify_inputs.cu compiles with `nvcc -c`.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "tree_build.h"

namespace jetspec {

// SGLang 0.5.17's TreeMaskMode values (QLEN_ONLY_BITPACKING is not supported).
constexpr int kFullMask = 0;  // per request, N rows of seq_len + N cells
constexpr int kQlenOnly = 1;  // per request, N rows of N cells

// Pointers are device memory, row-major and contiguous.
struct VerifyInputsArgs {
  const int64_t* tokens;           // [bs, N], root first
  const int64_t* parents;          // [bs, N]; a slot > 0 without an earlier parent (padding: -1) hangs off the root
  const int64_t* seq_lens;         // [bs], >= 0
  uint8_t* tree_mask;              // [mask_numel], bool or uint8 cells; cells past the end are not written
  int64_t* positions;              // [bs * N]
  int64_t* retrieve_index;         // [bs, N]
  int64_t* retrieve_next_token;    // [bs, N]
  int64_t* retrieve_next_sibling;  // [bs, N]
  int64_t* draft_tokens;           // [bs * N]
  int64_t mask_numel;              // >= bs * N * N
  int batch;
  int budget;                      // N, <= kMaxBudget
  int mask_mode;                   // kFullMask or kQlenOnly
  bool fill_prefix;                // FULL_MASK: write True into the prefix cells (else leave them)
};

// Enqueues one kernel (one warp per tree node) on `stream`; no host sync, no allocation.
// Returns cudaErrorInvalidValue when a size or the mode is outside the limits above.
cudaError_t launch_verify_inputs(const VerifyInputsArgs& args, cudaStream_t stream);

}  // namespace jetspec
