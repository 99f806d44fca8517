// The head's block inputs of one JETSPEC draft step: arguments and launcher.
// Plain CUDA runtime types only, so that draft_inputs.cu compiles with `nvcc -c`.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace jetspec {

// Index inputs may be int32 or int64 (SGLang keeps seq_lens, pool indices and tokens in either,
// and req_to_token in int32); `*_is64` says which. Pointers are device memory, contiguous.
struct DraftInputsArgs {
  const void* seq_lens;          // [bs]: committed tokens of each request
  const void* req_pool_indices;  // [bs]: each request's row of req_to_token
  const void* req_to_token;      // [pool, row_len]: KV slot of every position of every request
  const void* bonus;             // [bs]: the pending bonus token, first in the block
  int64_t* block_ids;            // [bs, W]: bonus, then mask_token_id
  int64_t* slots;                // [bs, W]: req_to_token[req, seq_len + j]
  int64_t* positions;            // [bs, W]: seq_len + j
  int64_t row_len;               // req_to_token's row length
  int64_t mask_token_id;
  int batch;
  int width;                     // W = D + 1
  bool seq_lens_is64, req_pool_indices_is64, req_to_token_is64, bonus_is64;
};

// Enqueues one kernel (one thread per block cell) on `stream`; no host sync, no allocation.
cudaError_t launch_draft_inputs(const DraftInputsArgs& args, cudaStream_t stream);

}  // namespace jetspec
