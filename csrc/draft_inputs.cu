// The head's block inputs of one JETSPEC draft step, in one launch (exact semantics:
// kernels/draft_inputs.py::draft_inputs_torch, its PyTorch reference). Cell j of request b:
// position seq_len + j, the KV slot req_to_token[req, seq_len + j] the scheduler allocated for
// it, and the token (the bonus at j = 0, else the mask token). Without it the worker ran about
// six small torch launches (add, gather, casts, fill, scatter) a step on the host's critical path.

#include "draft_inputs.h"

namespace jetspec {
namespace {

constexpr int kDraftThreads = 128;

__device__ __forceinline__ int64_t load_index(const void* p, bool is64, int64_t i) {
  return is64 ? static_cast<const int64_t*>(p)[i] : int64_t(static_cast<const int32_t*>(p)[i]);
}

__global__ void draft_inputs_kernel(const DraftInputsArgs a) {
  const int64_t cell = int64_t(blockIdx.x) * kDraftThreads + threadIdx.x;
  if (cell >= int64_t(a.batch) * a.width) return;
  const int64_t b = cell / a.width, j = cell % a.width;
  const int64_t position = load_index(a.seq_lens, a.seq_lens_is64, b) + j;
  const int64_t row = load_index(a.req_pool_indices, a.req_pool_indices_is64, b);
  a.positions[cell] = position;
  a.slots[cell] = load_index(a.req_to_token, a.req_to_token_is64, row * a.row_len + position);
  a.block_ids[cell] = j == 0 ? load_index(a.bonus, a.bonus_is64, b) : a.mask_token_id;
}

}  // namespace

cudaError_t launch_draft_inputs(const DraftInputsArgs& args, cudaStream_t stream) {
  if (args.batch < 0 || args.width < 1 || args.row_len < 1) return cudaErrorInvalidValue;
  const int64_t cells = int64_t(args.batch) * args.width;
  if (cells == 0) return cudaSuccess;
  const int64_t blocks = (cells + kDraftThreads - 1) / kDraftThreads;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  draft_inputs_kernel<<<unsigned(blocks), kDraftThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace jetspec
