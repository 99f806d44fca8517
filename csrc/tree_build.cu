// Fused best-first draft-tree builder: one thread block per request.
//
// It produces exactly tree.build_tree_reference's DraftTree and lineage.encode_lineage's
// EAGLE encoding. The heap pops nodes in the global order (score desc, depth, parent pop
// index, rank) of the whole K-ary tree, because a child never beats its parent. The tree
// is "children of popped nodes, in pop order", cut at N - 1. Every pop gets at least
// c_min children, so only the first width = ceil((N - 1) / c_min) nodes of that order
// matter; with no fan-out cap, c_min = K, and width is small (16 at N = 128, K = 8).
//
// Per depth d = 1 .. D - 1 (depth-D pops have no children), in shared memory:
//   A. beam: the best `width` children of the depth-(d - 1) beam, in within-depth order
//      (score desc, parent, rank). Child (p, j) finds its position by one binary search in
//      each sibling list j' (the children (., j') are sorted, since scores fall with p).
//   B. pops: merge the beam into the list of the best `width` nodes of depths < d, by
//      one binary search per entry, and remap parent links to the new positions.
// Then an exclusive scan of child counts over the pop list gives each pop its children's
// slots, and each output slot finds its pop by binary search.
//
// Cost per request: D - 1 depth steps of 3 barriers each. A step ranks about width * H(K)
// children (H: harmonic number), each with K - 1 binary searches of log2(width) steps in
// shared memory, then merges 2 * width entries with one search each. At N = 128, K = 8,
// no cap: width 16, <= 42 children per step, about 1 us per step on an H100-class SM.
// The log-probs and child counts are staged in shared memory once, up front.

#include "tree_build.h"

#include <cmath>

namespace jetspec {
namespace {

constexpr int kThreads = 512;  // >= kMaxBudget - 1: the final scan gives each pop one thread
constexpr int kWarps = kThreads / 32;
constexpr int kMaxWidth = kMaxBudget - 1;
constexpr float kMinLogprob = -1.0e4f;  // tree.MIN_LOGPROB

// The best `width` nodes of one depth, in within-depth order.
struct Beam {
  float score[kMaxWidth];
  short parent[kMaxWidth];        // index in the previous depth's beam
  unsigned char rank[kMaxWidth];  // top-K rank of the node's token
  short pop[kMaxWidth];           // position in the pop list; -1 when not in it
};

// The best `width` nodes of depths < D, in pop order.
struct Pops {
  float score[kMaxWidth];
  short parent[kMaxWidth];  // position of the parent in this list; -1 at the root
  unsigned char depth[kMaxWidth];
  unsigned char rank[kMaxWidth];
};

struct Shared {
  float logprob[kMaxDepth * kMaxTopK];  // clamped to kMinLogprob
  int children[kMaxDepth];              // of a node at depth d, in [1, K]
  Beam beam[2];  // depth d - 1 and d
  Pops pops[2];  // before and after a merge
  short moved_to[kMaxWidth];  // merge: new position of each old pop
  int first_child[kMaxWidth];  // slot - 1 of each pop's first child
  int slot[kMaxWidth];         // each pop's own slot
  int warp_sums[kWarps];
};

struct Node {
  int64_t token;
  int parent;
  int depth;
  int rank;
  float score;
};

// First index in [lo, hi) where `pred` fails; `pred` must hold on a prefix.
template <class Pred>
__device__ __forceinline__ int partition_point(int lo, int hi, Pred pred) {
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (pred(mid)) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Within-depth position of child (p, j), score s, among all children of the previous beam.
__device__ int child_rank(const float* prev, int n_prev, const float* lp_row, int c, int p, int j, float s) {
  int rank = p;  // (q, j) for q < p
  for (int jj = 0; jj < c; ++jj) {
    const float lp = lp_row[jj];
    if (jj < j) {  // (q, jj) precedes for every q <= p, and after that while strictly better
      rank += partition_point(p + 1, n_prev, [&](int q) { return __fadd_rn(prev[q], lp) > s; });
    } else if (jj > j) {  // (q, jj) never precedes for q >= p; before that, when at least as good
      rank += partition_point(0, p, [&](int q) { return __fadd_rn(prev[q], lp) >= s; });
    }
  }
  return rank;
}

// Inclusive prefix sum over the block; the block total is left in warp_sums[kWarps - 1].
__device__ int block_inclusive_sum(int v, int* warp_sums) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 1; o < 32; o <<= 1) {
    const int u = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += u;
  }
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int w = lane < kWarps ? warp_sums[lane] : 0;
    for (int o = 1; o < 32; o <<= 1) {
      const int u = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += u;
    }
    if (lane < kWarps) warp_sums[lane] = w;
  }
  __syncthreads();
  return warp > 0 ? v + warp_sums[warp - 1] : v;
}

__global__ void __launch_bounds__(kThreads) tree_build_kernel(const TreeBuildArgs a) {
  __shared__ Shared sm;
  const int b = blockIdx.x, tid = threadIdx.x;
  const int D = a.depth, K = a.topk, N = a.budget;
  const int64_t* ids = a.topk_ids + int64_t(b) * D * K;
  const int64_t root = a.root_tokens[b];
  for (int i = tid; i < D * K; i += kThreads) {
    sm.logprob[i] = fmaxf(a.topk_logprobs[int64_t(b) * D * K + i], kMinLogprob);
  }
  for (int d = tid; d < D; d += kThreads) {
    sm.children[d] = a.child_counts ? min(max(int(a.child_counts[int64_t(b) * D + d]), 1), K) : K;
  }
  if (tid == 0) {
    sm.beam[0].score[0] = 0.f;
    sm.beam[0].pop[0] = 0;
    sm.pops[0].score[0] = 0.f;
    sm.pops[0].parent[0] = -1;
    sm.pops[0].depth[0] = 0;
    sm.pops[0].rank[0] = 0;
  }
  __syncthreads();
  int c_min = K;
  for (int d = 0; d < D; ++d) c_min = min(c_min, sm.children[d]);
  const int width = (N - 2 + c_min) / c_min;  // ceil((N - 1) / c_min): pops that can get a child

  int cur = 0, n_pops = 1, n_prev = 1;
  for (int d = 1; d < D; ++d) {
    const Beam& prev = sm.beam[(d - 1) & 1];
    Beam& next = sm.beam[d & 1];
    const Pops& pops = sm.pops[cur];
    const float* lp_row = sm.logprob + (d - 1) * K;
    const int c = sm.children[d - 1];

    // A. Child (p, j) has at least (p + 1)(j + 1) - 1 children before it, so list j needs
    // only its first width / (j + 1) entries. A child no better than the last of a full pop
    // list can never become a pop, nor can its descendants.
    const float bar = n_pops == width ? pops.score[width - 1] : -INFINITY;
    int n_cand = 0;
    for (int j = 0; j < c; ++j) n_cand += min(n_prev, width / (j + 1));
    int n_next = 0;
    for (int base = 0; base < n_cand; base += kThreads) {
      bool kept = false;
      if (base + tid < n_cand) {
        int p = base + tid, j = 0;
        for (int len; p >= (len = min(n_prev, width / (j + 1))); ++j) p -= len;
        const float s = __fadd_rn(prev.score[p], lp_row[j]);
        if (s > bar) {
          const int r = child_rank(prev.score, n_prev, lp_row, c, p, j, s);
          if (r < width) {
            next.score[r] = s;
            next.parent[r] = short(p);
            next.rank[r] = static_cast<unsigned char>(j);
            kept = true;
          }
        }
      }
      n_next += __syncthreads_count(kept);  // the kept children fill beam slots [0, n_next)
    }
    if (n_next == 0) break;

    // B. On equal scores the shallower node (an old pop) goes first.
    for (int g = tid; g < n_pops; g += kThreads) {
      sm.moved_to[g] = short(g + partition_point(0, n_next, [&](int i) { return next.score[i] > pops.score[g]; }));
    }
    bool inserted = false;
    for (int i = tid; i < n_next; i += kThreads) {
      const int r = i + partition_point(0, n_pops, [&](int g) { return pops.score[g] >= next.score[i]; });
      next.pop[i] = short(r < width ? r : -1);
      inserted |= r < width;
    }
    if (!__syncthreads_or(inserted)) break;  // no depth-d pop: no deeper one either
    Pops& merged = sm.pops[cur ^ 1];
    for (int g = tid; g < n_pops; g += kThreads) {
      const int r = sm.moved_to[g];
      if (r < width) {
        merged.score[r] = pops.score[g];
        merged.parent[r] = pops.parent[g] < 0 ? short(-1) : sm.moved_to[pops.parent[g]];
        merged.depth[r] = pops.depth[g];
        merged.rank[r] = pops.rank[g];
      }
    }
    for (int i = tid; i < n_next; i += kThreads) {
      const int r = next.pop[i];
      if (r >= 0) {  // its parent is a pop too, since it comes first
        merged.score[r] = next.score[i];
        merged.parent[r] = sm.moved_to[prev.pop[next.parent[i]]];
        merged.depth[r] = static_cast<unsigned char>(d);
        merged.rank[r] = next.rank[i];
      }
    }
    __syncthreads();
    cur ^= 1;
    n_pops = min(width, n_pops + n_next);
    n_prev = n_next;
  }

  // Pop m's children take slots first_child[m] + 1 ..; nodes past N - 1 are cut.
  const Pops& pops = sm.pops[cur];
  const int c = tid < n_pops ? sm.children[pops.depth[tid]] : 0;
  const int inclusive = block_inclusive_sum(c, sm.warp_sums);
  if (tid < n_pops) sm.first_child[tid] = inclusive - c;
  const int n_nodes = 1 + min(N - 1, sm.warp_sums[kWarps - 1]);
  __syncthreads();
  if (tid < n_pops) sm.slot[tid] = tid == 0 ? 0 : sm.first_child[pops.parent[tid]] + pops.rank[tid] + 1;
  __syncthreads();

  auto node_at = [&](int s) -> Node {
    if (s == 0) return {root, -1, 0, 0, 0.f};
    if (s >= n_nodes) return {root, -1, 0, 0, -INFINITY};
    const int m = partition_point(0, n_pops, [&](int q) { return sm.first_child[q] < s; }) - 1;
    const int j = s - 1 - sm.first_child[m], d = pops.depth[m];
    return {ids[d * K + j], sm.slot[m], d + 1, j, __fadd_rn(pops.score[m], sm.logprob[d * K + j])};
  };
  auto lineage_index = [&](const Node& v) { return int64_t(max(v.parent, 0)) * a.lineage_topk + v.rank; };

  const int64_t row = int64_t(b) * N, lineage_row = int64_t(b) * (N - 1);
  for (int s = tid; s < N; s += kThreads) {
    const Node v = node_at(s);
    a.tokens[row + s] = v.token;
    a.parents[row + s] = v.parent;
    a.depths[row + s] = v.depth;
    a.scores[row + s] = v.score;
    if (s > 0) {
      a.top_scores_index[lineage_row + s - 1] = lineage_index(v);
      a.draft_tokens[lineage_row + s - 1] = v.token;
    }
  }
  const int64_t used = min(a.lineage_cols - 1, int64_t(N - 1));  // parent_list columns that name a node
  for (int64_t col = tid; col < a.lineage_cols; col += kThreads) {
    a.parent_list[b * a.lineage_cols + col] = col >= 1 && col <= used ? lineage_index(node_at(int(col))) : -1;
  }
  if (tid == 0) a.num_nodes[b] = n_nodes;
}

}  // namespace

cudaError_t launch_tree_build(const TreeBuildArgs& args, cudaStream_t stream) {
  const bool ok = args.batch >= 0 && args.budget >= 1 && args.budget <= kMaxBudget && args.topk >= 1 &&
                  args.topk <= kMaxTopK && args.depth >= 1 && args.depth <= kMaxDepth && args.lineage_topk >= 1 &&
                  args.lineage_cols == (args.depth > 1 ? args.lineage_topk * (args.depth - 1) + 1 : 1);
  if (!ok) return cudaErrorInvalidValue;
  if (args.batch == 0) return cudaSuccess;
  tree_build_kernel<<<args.batch, kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace jetspec
