// The fused best-first tree builder: its limits, arguments and launcher.
// Plain CUDA runtime types only, so that tree_build.cu compiles with `nvcc -c`.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace jetspec {

constexpr int kMaxBudget = 512;  // N, root included
constexpr int kMaxTopK = 32;     // K
constexpr int kMaxDepth = 64;    // D

// Pointers are device memory, row-major and contiguous.
struct TreeBuildArgs {
  const int64_t* topk_ids;       // [bs, D, K]
  const float* topk_logprobs;    // [bs, D, K], best first per depth, <= 0
  const int64_t* root_tokens;    // [bs]
  const int64_t* child_counts;   // [bs, D] children per node at depth d - 1 (clamped to [1, K]); nullptr: K
  int64_t* tokens;               // [bs, N]
  int64_t* parents;              // [bs, N]
  int64_t* depths;               // [bs, N]
  float* scores;                 // [bs, N]
  int64_t* num_nodes;            // [bs]
  int64_t* top_scores_index;     // [bs, N - 1]
  int64_t* parent_list;          // [bs, lineage_cols]
  int64_t* draft_tokens;         // [bs, N - 1]
  int batch;
  int depth;
  int topk;
  int budget;
  int64_t lineage_topk;          // K_enc
  int64_t lineage_cols;          // K_enc * (D - 1) + 1, or 1 when D == 1
};

// Enqueues one kernel (one block per request) on `stream`; no host sync, no allocation.
// Returns cudaErrorInvalidValue when a size is outside the limits above.
cudaError_t launch_tree_build(const TreeBuildArgs& args, cudaStream_t stream);

}  // namespace jetspec
