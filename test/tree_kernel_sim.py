"""Thread-level CPU models of ``csrc/tree_build.cu`` and ``csrc/verify_inputs.cu`` (tests only).

Each function mirrors one piece of a kernel line by line: ``simulate_request``
is one thread block, and each loop over threads (or over the entries they
stride across) is one phase between two barriers. Shared arrays start as
poison (NaN / -999), and the model asserts that it reads only slots an earlier
phase wrote. Scores are float32 sums, as on the GPU. Proving the algorithm
here, against ``build_tree_reference``, leaves the GPU tests to check the port.

``simulate_verify_launch`` is the verify-inputs grid: one block per 8 nodes of a
request, one warp per node, whose lanes' strided loops are vector ops here. It
writes through ``MaskMemory``, which counts every cell write, refuses any past
the buffer's end and checks that the 16-byte stores are aligned.
"""

from __future__ import annotations

import numpy as np

from jetspec_sglang.tree import MIN_LOGPROB

THREADS = 512  # kThreads
MAX_WIDTH = 511  # kMaxWidth
MAX_BUDGET = 512  # kMaxBudget
POISON = -999
F32 = np.float32


def partition_point(lo: int, hi: int, pred) -> int:
    """First index in ``[lo, hi)`` where ``pred`` fails (``pred`` holds on a prefix)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if pred(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo


def child_rank(prev_score: np.ndarray, n_prev: int, lp_row: np.ndarray, c: int, p: int, j: int, s: F32) -> int:
    """Within-depth position of child ``(p, j)`` among all children of the previous beam."""
    rank = p
    for jj in range(c):
        lp = lp_row[jj]
        if jj < j:
            rank += partition_point(p + 1, n_prev, lambda q: F32(prev_score[q] + lp) > s)
        elif jj > j:
            rank += partition_point(0, p, lambda q: F32(prev_score[q] + lp) >= s)
    return rank


def new_beam() -> dict:
    return {name: np.full(MAX_WIDTH, POISON) for name in ("parent", "rank", "pop")} | {
        "score": np.full(MAX_WIDTH, np.nan, F32)
    }


def new_pops() -> dict:
    return {name: np.full(MAX_WIDTH, POISON) for name in ("parent", "depth", "rank")} | {
        "score": np.full(MAX_WIDTH, np.nan, F32)
    }


def simulate_request(ids: np.ndarray, lp: np.ndarray, root: int, counts: np.ndarray, n: int, k_enc: int) -> dict:
    """One block: ``ids [D, K]``, raw ``lp [D, K]``, ``counts [D]``; returns this request's output rows."""
    depth, k = ids.shape
    children = np.clip(counts, 1, k)
    c_min = int(children.min())
    width = (n - 2 + c_min) // c_min
    lp = np.maximum(lp.astype(F32), F32(MIN_LOGPROB))

    beam, pops = [new_beam(), new_beam()], [new_pops(), new_pops()]
    beam[0]["score"][0], beam[0]["pop"][0] = 0.0, 0
    pops[0]["score"][0], pops[0]["parent"][0], pops[0]["depth"][0], pops[0]["rank"][0] = 0.0, -1, 0, 0
    cur, n_pops, n_prev = 0, 1, 1
    for d in range(1, depth):
        prev, nxt, old = beam[(d - 1) & 1], beam[d & 1], pops[cur]
        lp_row, c = lp[d - 1], int(children[d - 1])
        bar = old["score"][width - 1] if n_pops == width else F32(-np.inf)
        lens = [min(n_prev, width // (j + 1)) for j in range(c)]
        n_next = 0
        for base in range(0, sum(lens), THREADS):  # each round ends in __syncthreads_count
            for tid in range(THREADS):
                p, j = base + tid, 0
                if p >= sum(lens):
                    continue
                while p >= lens[j]:
                    p -= lens[j]
                    j += 1
                assert not np.isnan(prev["score"][p])
                s = F32(prev["score"][p] + lp_row[j])
                if s > bar:
                    r = child_rank(prev["score"], n_prev, lp_row, c, p, j, s)
                    if r < width:
                        assert np.isnan(nxt["score"][r]), "two candidates claimed one beam slot"
                        nxt["score"][r], nxt["parent"][r], nxt["rank"][r] = s, p, j
                        n_next += 1
        if n_next == 0:
            break
        assert not np.isnan(nxt["score"][:n_next]).any(), "kept candidates are not a prefix"

        moved_to = np.full(MAX_WIDTH, POISON)
        for g in range(n_pops):
            moved_to[g] = g + partition_point(0, n_next, lambda i: nxt["score"][i] > old["score"][g])
        inserted = False
        for i in range(n_next):
            r = i + partition_point(0, n_pops, lambda g: old["score"][g] >= nxt["score"][i])
            nxt["pop"][i] = r if r < width else -1
            inserted |= r < width
        if not inserted:  # __syncthreads_or
            break
        merged = pops[cur ^ 1] = new_pops()
        for g in range(n_pops):
            r = moved_to[g]
            if r < width:
                for name in ("score", "depth", "rank"):
                    merged[name][r] = old[name][g]
                merged["parent"][r] = -1 if old["parent"][g] < 0 else moved_to[old["parent"][g]]
        for i in range(n_next):
            r = nxt["pop"][i]
            if r >= 0:
                parent_pop = prev["pop"][nxt["parent"][i]]
                assert parent_pop >= 0, "an inserted node's parent is not a pop"
                merged["score"][r], merged["depth"][r], merged["rank"][r] = nxt["score"][i], d, nxt["rank"][i]
                merged["parent"][r] = moved_to[parent_pop]
        cur, n_pops, n_prev = cur ^ 1, min(width, n_pops + n_next), n_next
        beam[(d + 1) & 1] = new_beam()  # what the next depth writes is never read before it is written

    final = pops[cur]
    assert (final["parent"][1:n_pops] >= 0).all() and not np.isnan(final["score"][:n_pops]).any()
    c_pop = np.array([children[final["depth"][t]] if t < n_pops else 0 for t in range(THREADS)])
    inclusive = np.cumsum(c_pop)  # block_inclusive_sum
    first_child = inclusive[:n_pops] - c_pop[:n_pops]
    total = int(inclusive[-1])
    slot = np.array([0 if t == 0 else first_child[final["parent"][t]] + final["rank"][t] + 1 for t in range(n_pops)])
    n_nodes = 1 + min(n - 1, total)

    def node_at(s: int) -> tuple[int, int, int, int, F32]:
        if s == 0:
            return root, -1, 0, 0, F32(0.0)
        if s >= n_nodes:
            return root, -1, 0, 0, F32(-np.inf)
        m = partition_point(0, n_pops, lambda q: first_child[q] < s) - 1
        j = s - 1 - first_child[m]
        d = final["depth"][m]
        return int(ids[d, j]), int(slot[m]), int(d) + 1, int(j), F32(final["score"][m] + lp[d, j])

    def lineage_index(node: tuple) -> int:
        return max(node[1], 0) * k_enc + node[3]

    nodes = [node_at(s) for s in range(n)]
    cols = k_enc * (depth - 1) + 1 if depth > 1 else 1
    used = min(cols - 1, n - 1)
    return {
        "tokens": [v[0] for v in nodes],
        "parents": [v[1] for v in nodes],
        "depths": [v[2] for v in nodes],
        "scores": [v[4] for v in nodes],
        "num_nodes": n_nodes,
        "top_scores_index": [lineage_index(v) for v in nodes[1:]],
        "draft_tokens": [v[0] for v in nodes[1:]],
        "parent_list": [lineage_index(node_at(col)) if 1 <= col <= used else -1 for col in range(cols)],
    }


# --- csrc/verify_inputs.cu ----------------------------------------------------------------

ROW_WARPS = 8  # kRowWarps
FULL_MASK = 0  # kFullMask


class MaskMemory:
    """The ``tree_mask`` buffer: ``cells`` (uint8) at device address ``addr``, with a write count per cell."""

    def __init__(self, cells: np.ndarray, addr: int) -> None:
        self.cells, self.addr = cells, addr
        self.writes = np.zeros(cells.size, dtype=np.int64)

    def store(self, first: int, values: np.ndarray) -> None:
        """Bytes from cell ``first`` on; an index past the end raises, as a stray store would fault."""
        index = first + np.arange(values.size)
        if values.size:
            assert index[0] >= 0, "a store before the buffer"
        self.cells[index] = values
        np.add.at(self.writes, index, 1)

    def fill_ones(self, first: int, n: int) -> None:
        """``warp_fill_ones(tree_mask + first, n, lane)`` for ``n > 0``: bytes, aligned 16-byte stores, bytes."""
        head = min(n, (16 - ((self.addr + first) & 15)) & 15)
        body = (n - head) // 16
        assert body == 0 or (self.addr + first + head) % 16 == 0, "misaligned 16-byte stores"
        self.store(first, np.ones(head, np.uint8))
        self.store(first + head, np.ones(16 * body, np.uint8))  # the body's 16-byte stores, back to back
        self.store(first + head + 16 * body, np.ones(n - head - 16 * body, np.uint8))


def simulate_verify_launch(
    tokens: np.ndarray, parents: np.ndarray, seq_lens: np.ndarray, mode: int, fill_prefix: bool, mask: MaskMemory
) -> dict[str, np.ndarray]:
    """The grid ``(bs, ceil(N / 8))`` on ``tokens, parents [bs, N]``, ``seq_lens [bs]``; returns the other outputs."""
    bs, n = tokens.shape
    out = {name: np.full(bs * n, POISON) for name in
           ("positions", "retrieve_index", "retrieve_next_token", "retrieve_next_sibling", "draft_tokens")}  # fmt: skip
    for b in range(bs):
        for y in range(-(-n // ROW_WARPS)):
            parent = np.full(MAX_BUDGET, POISON)  # shared, poisoned per block
            for s in range(n):  # the block's threads, strided
                p = int(parents[b, s])
                parent[s] = -1 if s == 0 else (p if 0 <= p < s else 0)
            for i in range(y * ROW_WARPS, min(n, (y + 1) * ROW_WARPS)):  # __syncthreads, then one warp per node
                simulate_verify_warp(b, i, parent, tokens, seq_lens, mode, fill_prefix, mask, out)
    return out


def simulate_verify_warp(
    b: int, i: int, parent: np.ndarray, tokens: np.ndarray, seq_lens: np.ndarray, mode: int, fill_prefix: bool,
    mask: MaskMemory, out: dict[str, np.ndarray],
) -> None:  # fmt: skip
    """One warp: node ``i`` of request ``b``."""
    n = tokens.shape[1]
    slots = np.arange(n)
    path = np.full(MAX_BUDGET, POISON)
    path[:n] = 0
    depth, v = -1, i
    while v >= 0:  # lane 0
        assert parent[v] != POISON and path[v] != POISON
        path[v], depth, v = 1, depth + 1, parent[v]
    child = slots[parent[:n] == i].min(initial=n)  # warp_min over the lanes' strided minima
    sibling = slots[(slots > i) & (parent[:n] == parent[i])].min(initial=n)

    node, seq_len = b * n + i, int(seq_lens[b])
    out["positions"][node] = seq_len + depth
    out["retrieve_index"][node] = node
    out["retrieve_next_token"][node] = child if child < n else -1
    out["retrieve_next_sibling"][node] = sibling if sibling < n else -1
    out["draft_tokens"][node] = tokens[b, i]

    start, prefix = node * n, 0
    if mode == FULL_MASK:
        before = int(seq_lens[:b].sum())  # warp_sum of the lanes' strided sums
        start, prefix = n * (before + b * n) + i * (seq_len + n), seq_len
    fill = min(prefix, mask.cells.size - start)
    if fill_prefix and fill > 0:
        mask.fill_ones(start, fill)
    kept = max(0, min(n, mask.cells.size - start - prefix))  # cells past the end are not written
    mask.store(start + prefix, path[:kept].astype(np.uint8))
