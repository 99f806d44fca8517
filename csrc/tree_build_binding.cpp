// PyTorch binding of the fused tree builder, of the verify inputs of its trees and of the head's
// block inputs: check every tensor, then launch on the current CUDA stream (so that it can be
// captured in a CUDA graph).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <optional>

#include "draft_inputs.h"
#include "tree_build.h"
#include "verify_inputs.h"

namespace {

void check(const at::Tensor& t, const char* name, at::ScalarType dtype, at::IntArrayRef shape, at::Device device) {
  TORCH_CHECK(t.device() == device, name, " must be on ", device, " (with the first input), got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void build_tree(const at::Tensor& topk_ids, const at::Tensor& topk_logprobs, const at::Tensor& root_tokens,
                const std::optional<at::Tensor>& child_counts, int64_t budget, int64_t lineage_topk,
                const at::Tensor& tokens, const at::Tensor& parents, const at::Tensor& depths, const at::Tensor& scores,
                const at::Tensor& num_nodes, const at::Tensor& top_scores_index, const at::Tensor& parent_list,
                const at::Tensor& draft_tokens) {
  TORCH_CHECK(topk_ids.is_cuda() && topk_ids.dim() == 3, "topk_ids must be a CUDA [bs, D, K] tensor, got ",
              topk_ids.device(), " ", topk_ids.sizes());
  const int64_t bs = topk_ids.size(0), depth = topk_ids.size(1), k = topk_ids.size(2);
  TORCH_CHECK(budget >= 1 && budget <= jetspec::kMaxBudget, "budget must be in [1, ", jetspec::kMaxBudget, "], got ",
              budget);
  TORCH_CHECK(k >= 1 && k <= jetspec::kMaxTopK, "K must be in [1, ", jetspec::kMaxTopK, "], got ", k);
  TORCH_CHECK(depth >= 1 && depth <= jetspec::kMaxDepth, "D must be in [1, ", jetspec::kMaxDepth, "], got ", depth);
  TORCH_CHECK(lineage_topk >= 1 && lineage_topk <= INT32_MAX, "lineage_topk must be in [1, 2^31), got ", lineage_topk);
  TORCH_CHECK(bs <= INT32_MAX, "batch too large: ", bs);
  const int64_t cols = depth > 1 ? lineage_topk * (depth - 1) + 1 : 1;
  const at::Device device = topk_ids.device();
  check(topk_ids, "topk_ids", at::kLong, {bs, depth, k}, device);
  check(topk_logprobs, "topk_logprobs", at::kFloat, {bs, depth, k}, device);
  check(root_tokens, "root_tokens", at::kLong, {bs}, device);
  if (child_counts) check(*child_counts, "child_counts", at::kLong, {bs, depth}, device);
  check(tokens, "tokens", at::kLong, {bs, budget}, device);
  check(parents, "parents", at::kLong, {bs, budget}, device);
  check(depths, "depths", at::kLong, {bs, budget}, device);
  check(scores, "scores", at::kFloat, {bs, budget}, device);
  check(num_nodes, "num_nodes", at::kLong, {bs}, device);
  check(top_scores_index, "top_scores_index", at::kLong, {bs, budget - 1}, device);
  check(draft_tokens, "draft_tokens", at::kLong, {bs, budget - 1}, device);
  check(parent_list, "parent_list", at::kLong, {bs, cols}, device);

  const jetspec::TreeBuildArgs args{
      topk_ids.data_ptr<int64_t>(),
      topk_logprobs.data_ptr<float>(),
      root_tokens.data_ptr<int64_t>(),
      child_counts ? child_counts->data_ptr<int64_t>() : nullptr,
      tokens.data_ptr<int64_t>(),
      parents.data_ptr<int64_t>(),
      depths.data_ptr<int64_t>(),
      scores.data_ptr<float>(),
      num_nodes.data_ptr<int64_t>(),
      top_scores_index.data_ptr<int64_t>(),
      parent_list.data_ptr<int64_t>(),
      draft_tokens.data_ptr<int64_t>(),
      int(bs),
      int(depth),
      int(k),
      int(budget),
      lineage_topk,
      cols,
  };
  const c10::cuda::CUDAGuard guard(device);
  const cudaError_t err = jetspec::launch_tree_build(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "tree_build kernel launch failed: ", cudaGetErrorString(err));
}

void build_verify_inputs(const at::Tensor& tokens, const at::Tensor& parents, const at::Tensor& seq_lens,
                         int64_t mask_mode, bool fill_prefix, const at::Tensor& tree_mask, const at::Tensor& positions,
                         const at::Tensor& retrieve_index, const at::Tensor& retrieve_next_token,
                         const at::Tensor& retrieve_next_sibling, const at::Tensor& draft_tokens) {
  TORCH_CHECK(tokens.is_cuda() && tokens.dim() == 2, "tokens must be a CUDA [bs, N] tensor, got ", tokens.device(), " ",
              tokens.sizes());
  const int64_t bs = tokens.size(0), n = tokens.size(1);
  TORCH_CHECK(n >= 1 && n <= jetspec::kMaxBudget, "N must be in [1, ", jetspec::kMaxBudget, "], got ", n);
  TORCH_CHECK(bs <= INT32_MAX, "batch too large: ", bs);
  TORCH_CHECK(mask_mode == jetspec::kFullMask || mask_mode == jetspec::kQlenOnly,
              "mask_mode must be FULL_MASK (0) or QLEN_ONLY (1), got ", mask_mode);
  const at::Device device = tokens.device();
  check(tokens, "tokens", at::kLong, {bs, n}, device);
  check(parents, "parents", at::kLong, {bs, n}, device);
  check(seq_lens, "seq_lens", at::kLong, {bs}, device);
  check(positions, "positions", at::kLong, {bs * n}, device);
  check(retrieve_index, "retrieve_index", at::kLong, {bs, n}, device);
  check(retrieve_next_token, "retrieve_next_token", at::kLong, {bs, n}, device);
  check(retrieve_next_sibling, "retrieve_next_sibling", at::kLong, {bs, n}, device);
  check(draft_tokens, "draft_tokens", at::kLong, {bs * n}, device);
  const at::ScalarType mask_dtype = tree_mask.scalar_type();
  TORCH_CHECK(mask_dtype == at::kBool || mask_dtype == at::kByte, "tree_mask must be bool or uint8, got ", mask_dtype);
  check(tree_mask, "tree_mask", mask_dtype, {tree_mask.numel()}, device);
  TORCH_CHECK(tree_mask.numel() >= bs * n * n, "tree_mask needs at least bs * N * N = ", bs * n * n, " cells, got ",
              tree_mask.numel());

  const jetspec::VerifyInputsArgs args{
      tokens.data_ptr<int64_t>(),
      parents.data_ptr<int64_t>(),
      seq_lens.data_ptr<int64_t>(),
      static_cast<uint8_t*>(tree_mask.data_ptr()),
      positions.data_ptr<int64_t>(),
      retrieve_index.data_ptr<int64_t>(),
      retrieve_next_token.data_ptr<int64_t>(),
      retrieve_next_sibling.data_ptr<int64_t>(),
      draft_tokens.data_ptr<int64_t>(),
      tree_mask.numel(),
      int(bs),
      int(n),
      int(mask_mode),
      fill_prefix,
  };
  const c10::cuda::CUDAGuard guard(device);
  const cudaError_t err = jetspec::launch_verify_inputs(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "verify_inputs kernel launch failed: ", cudaGetErrorString(err));
}

bool index_is64(const at::Tensor& t, const char* name, at::Device device) {
  TORCH_CHECK(t.device() == device, name, " must be on ", device, " (with the first input), got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kInt || t.scalar_type() == at::kLong, name, " must be int32 or int64, got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  return t.scalar_type() == at::kLong;
}

void draft_inputs(const at::Tensor& seq_lens, const at::Tensor& req_pool_indices, const at::Tensor& req_to_token,
                  const at::Tensor& bonus, int64_t mask_token_id, const at::Tensor& block_ids, const at::Tensor& slots,
                  const at::Tensor& positions) {
  TORCH_CHECK(seq_lens.is_cuda() && seq_lens.dim() == 1, "seq_lens must be a CUDA [bs] tensor, got ",
              seq_lens.device(), " ", seq_lens.sizes());
  TORCH_CHECK(block_ids.dim() == 2, "block_ids must be [bs, W], got ", block_ids.sizes());
  TORCH_CHECK(req_to_token.dim() == 2, "req_to_token must be [pool, row_len], got ", req_to_token.sizes());
  const int64_t bs = seq_lens.size(0), width = block_ids.size(1);
  TORCH_CHECK(bs <= INT32_MAX && width >= 1 && width <= jetspec::kMaxDepth + 1, "bad block shape ", block_ids.sizes());
  const at::Device device = seq_lens.device();
  const bool seq_is64 = index_is64(seq_lens, "seq_lens", device);
  const bool req_is64 = index_is64(req_pool_indices, "req_pool_indices", device);
  const bool r2t_is64 = index_is64(req_to_token, "req_to_token", device);
  const bool bonus_is64 = index_is64(bonus, "bonus", device);
  TORCH_CHECK(req_pool_indices.sizes() == seq_lens.sizes() && bonus.sizes() == seq_lens.sizes(),
              "req_pool_indices and bonus must be [bs] like seq_lens, got ", req_pool_indices.sizes(), " and ",
              bonus.sizes());
  check(block_ids, "block_ids", at::kLong, {bs, width}, device);
  check(slots, "slots", at::kLong, {bs, width}, device);
  check(positions, "positions", at::kLong, {bs, width}, device);

  const jetspec::DraftInputsArgs args{
      seq_lens.data_ptr(),
      req_pool_indices.data_ptr(),
      req_to_token.data_ptr(),
      bonus.data_ptr(),
      block_ids.data_ptr<int64_t>(),
      slots.data_ptr<int64_t>(),
      positions.data_ptr<int64_t>(),
      req_to_token.size(1),
      mask_token_id,
      int(bs),
      int(width),
      seq_is64,
      req_is64,
      r2t_is64,
      bonus_is64,
  };
  const c10::cuda::CUDAGuard guard(device);
  const cudaError_t err = jetspec::launch_draft_inputs(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "draft_inputs kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("build_tree", &build_tree, "Fused best-first draft tree + EAGLE lineage (writes the output tensors).",
        pybind11::arg("topk_ids"), pybind11::arg("topk_logprobs"), pybind11::arg("root_tokens"),
        pybind11::arg("child_counts"), pybind11::arg("budget"), pybind11::arg("lineage_topk"), pybind11::arg("tokens"),
        pybind11::arg("parents"), pybind11::arg("depths"), pybind11::arg("scores"), pybind11::arg("num_nodes"),
        pybind11::arg("top_scores_index"), pybind11::arg("parent_list"), pybind11::arg("draft_tokens"));
  m.def("build_verify_inputs", &build_verify_inputs,
        "SGLang's verify inputs (tree mask, positions, retrieve lists, flat tokens) of built trees.",
        pybind11::arg("tokens"), pybind11::arg("parents"), pybind11::arg("seq_lens"), pybind11::arg("mask_mode"),
        pybind11::arg("fill_prefix"), pybind11::arg("tree_mask"), pybind11::arg("positions"),
        pybind11::arg("retrieve_index"), pybind11::arg("retrieve_next_token"), pybind11::arg("retrieve_next_sibling"),
        pybind11::arg("draft_tokens"));
  m.def("draft_inputs", &draft_inputs, "The head's block inputs: tokens, KV slots and positions of [bonus, MASK x D].",
        pybind11::arg("seq_lens"), pybind11::arg("req_pool_indices"), pybind11::arg("req_to_token"),
        pybind11::arg("bonus"), pybind11::arg("mask_token_id"), pybind11::arg("block_ids"), pybind11::arg("slots"),
        pybind11::arg("positions"));
}
