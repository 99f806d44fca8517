// SGLang's verify inputs of a built draft tree, written in place of what
// sgl_kernel's build_tree_kernel_efficient derives from the EAGLE lineage encoding
// (exact semantics: tree_layout.eagle_verify_inputs, its PyTorch reference).
//
// One warp per tree node i of request b; a block holds kRowWarps nodes of one request
// (blockIdx = (b, i / kRowWarps)) and first loads that request's parent slots into shared
// memory. Then each warp, on its own:
//   1. lane 0 walks i's ancestors, flagging them in the warp's row of `on_path`;
//   2. the lanes find i's lowest child and next sibling by a min over all slots;
//   3. lane 0 writes i's position, retrieve entries and token;
//   4. the lanes write mask row i: the prefix cells (FULL_MASK, when asked; 16-byte stores
//      between single bytes at the ends), then the N tree cells from `on_path`.
// FULL_MASK rows of request b start after N * (seq_lens[0..b) + b * N) cells, summed per warp.
// SGLang's kernel instead gives each row one thread, which searches the lineage encoding for
// every ancestor, and resets the mask and retrieve lists in separate launches.

#include "verify_inputs.h"

namespace jetspec {
namespace {

constexpr int kRowWarps = 8;  // nodes (mask rows) per block
constexpr int kVerifyThreads = 32 * kRowWarps;
constexpr unsigned kWarpMask = 0xffffffffu;

__device__ __forceinline__ int64_t warp_sum(int64_t v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kWarpMask, v, o);
  return v;
}

__device__ __forceinline__ int warp_min(int v) {
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(kWarpMask, v, o));
  return v;
}

// Writes 1 into the n >= 0 bytes from p: single bytes up to the first 16-byte boundary and
// after the last one, 16-byte stores between. One warp.
__device__ void warp_fill_ones(uint8_t* p, int64_t n, int lane) {
  const int64_t head = min(n, int64_t((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15));
  const int64_t body = (n - head) / 16;
  for (int64_t k = lane; k < head; k += 32) p[k] = 1;
  const uint4 ones = make_uint4(0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u);
  uint4* aligned = reinterpret_cast<uint4*>(p + head);
  for (int64_t k = lane; k < body; k += 32) aligned[k] = ones;
  for (int64_t k = head + 16 * body + lane; k < n; k += 32) p[k] = 1;
}

__global__ void verify_inputs_kernel(const VerifyInputsArgs a) {
  __shared__ short parent[kMaxBudget];  // -1 at the root, else an earlier slot
  __shared__ uint8_t on_path[kRowWarps][kMaxBudget];
  const int b = blockIdx.x, N = a.budget, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row0 = int64_t(b) * N;
  for (int s = threadIdx.x; s < N; s += kVerifyThreads) {
    const int64_t p = a.parents[row0 + s];
    parent[s] = s == 0 ? short(-1) : short(p >= 0 && p < s ? p : 0);
  }
  __syncthreads();
  const int i = blockIdx.y * kRowWarps + warp;
  if (i >= N) return;

  // 1. Ancestors of i, i included; depth = hops to the root.
  uint8_t* path = on_path[warp];
  for (int s = lane; s < N; s += 32) path[s] = 0;
  __syncwarp();
  int depth = -1;
  if (lane == 0) {
    for (int v = i; v >= 0; v = parent[v]) {
      path[v] = 1;
      ++depth;
    }
  }
  __syncwarp();
  depth = __shfl_sync(kWarpMask, depth, 0);

  // 2. Children are linked in slot order. The root has no sibling: no other slot has parent -1.
  int child = N, sibling = N;
  for (int s = lane; s < N; s += 32) {
    if (parent[s] == i) child = min(child, s);
    if (s > i && parent[s] == parent[i]) sibling = min(sibling, s);
  }
  child = warp_min(child);
  sibling = warp_min(sibling);

  // 3. Per-node outputs.
  const int64_t node = row0 + i, seq_len = a.seq_lens[b];
  if (lane == 0) {
    a.positions[node] = seq_len + depth;
    a.retrieve_index[node] = node;
    a.retrieve_next_token[node] = child < N ? child : -1;
    a.retrieve_next_sibling[node] = sibling < N ? sibling : -1;
    a.draft_tokens[node] = a.tokens[node];
  }

  // 4. Mask row i: [prefix cells,] then tree cell s = (s is i or an ancestor of i).
  int64_t start = node * N, prefix = 0;
  if (a.mask_mode == kFullMask) {
    int64_t before = 0;  // prefix cells per row of the earlier requests
    for (int r = lane; r < b; r += 32) before += a.seq_lens[r];
    prefix = seq_len;
    start = int64_t(N) * (warp_sum(before) + row0) + i * (seq_len + N);
  }
  const int64_t fill = min(prefix, a.mask_numel - start);
  if (a.fill_prefix && fill > 0) warp_fill_ones(a.tree_mask + start, fill, lane);
  for (int s = lane; s < N; s += 32) {
    const int64_t cell = start + prefix + s;
    if (cell < a.mask_numel) a.tree_mask[cell] = path[s];
  }
}

}  // namespace

cudaError_t launch_verify_inputs(const VerifyInputsArgs& args, cudaStream_t stream) {
  const int64_t n = args.budget;
  const bool ok = args.batch >= 0 && n >= 1 && n <= kMaxBudget &&
                  (args.mask_mode == kFullMask || args.mask_mode == kQlenOnly) && args.mask_numel >= args.batch * n * n;
  if (!ok) return cudaErrorInvalidValue;
  if (args.batch == 0) return cudaSuccess;
  const dim3 grid(args.batch, (args.budget + kRowWarps - 1) / kRowWarps);
  verify_inputs_kernel<<<grid, kVerifyThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace jetspec
