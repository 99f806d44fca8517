"""JETSPEC inside SGLang 0.5.17 on a GPU: lossless outputs and the serving features users rely on.

Run on a CUDA machine with sglang installed (``scripts/bootstrap_gpu.sh``). The
SmolLM2 tests need ``JETSPEC_SMOLLM2`` (an HF folder, e.g. from
``scripts/assemble_model.py``); ``JETSPEC_HEAD`` optionally names a trained head
for it (a random one is used otherwise). Every engine runs with SGLang's strict
idle memory check, so a leaked KV slot fails the run. ``JETSPEC_TEST_MEM_FRACTION``
(default 0.2) is each engine's ``mem_fraction_static``: SGLang counts other
processes' GPU memory against it, so raise it when the GPU is shared.
``JETSPEC_TEST_ATTENTION_BACKEND`` (default triton) is the SmolLM2 servers' attention backend,
e.g. flashinfer; the fp32 tests always use triton (flashinfer has no fp32 kernels).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from jetspec_sglang.server_process import SGLangServer

pytestmark = pytest.mark.gpu
os.environ.setdefault("SGLANG_ENABLE_STRICT_MEM_CHECK_DURING_IDLE", "1")
os.environ.setdefault("JETSPEC_FP32_NATIVE_OPS", "1")  # sgl-kernel's fused ops have no fp32 kernels

MEM_FRACTION = os.environ.get("JETSPEC_TEST_MEM_FRACTION", "0.2")
SMOL_ATTENTION_BACKEND = os.environ.get("JETSPEC_TEST_ATTENTION_BACKEND", "triton")
TINY_VOCAB = 8  # with K = 8 every depth-1 choice is drafted, so paths go deep
COMMON = dict(attention_backend="triton", sampling_backend="pytorch", random_seed=0, log_level="error",
              max_running_requests=8, cuda_graph_max_bs_decode=4, mem_fraction_static=float(MEM_FRACTION))
TREE = dict(speculative_num_draft_tokens=48, speculative_eagle_topk=8, speculative_num_steps=4)


def greedy(max_new_tokens: int) -> dict:
    return {"temperature": 0, "max_new_tokens": max_new_tokens, "ignore_eos": True}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> tuple[str, str]:
    """A random fp32 Llama with an 8-token vocab and a random causal head for it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from jetspec_sglang import DraftHead, DraftHeadConfig

    root = tmp_path_factory.mktemp("tiny")
    config = LlamaConfig(vocab_size=TINY_VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         initializer_range=0.2, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    LlamaForCausalLM(config).float().save_pretrained(root / "target")
    head = DraftHead(DraftHeadConfig.for_target(config, num_hidden_layers=2, block_size=8)).float()
    head.save_pretrained(root / "head")
    return str(root / "target"), str(root / "head")


def tiny_prompts(n: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, TINY_VOCAB, (int(torch.randint(3, 40, (1,), generator=gen)),), generator=gen).tolist()
            for _ in range(n)]


def run_engine(model: str, calls: list[list[list[int]]], sampling: dict, **kwargs) -> list[list[dict]]:
    """One ``sglang.Engine`` (``COMMON`` settings, overridden by ``kwargs``); each call is one offline batch."""
    import sglang

    engine = sglang.Engine(model_path=model, skip_tokenizer_init=True, **{**COMMON, **kwargs})
    try:
        return [engine.generate(input_ids=prompts, sampling_params=sampling) for prompts in calls]
    finally:
        engine.shutdown()


def long_prompts(n: int, seed: int) -> list[list[int]]:
    """Prompts of 600 to 1100 tokens: past the tree kernel's ``MIN_SPLIT_KEYS`` (512), so that verify attention
    splits each prefix and merges the splits."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, TINY_VOCAB, (int(torch.randint(600, 1100, (1,), generator=gen)),), generator=gen).tolist()
            for _ in range(n)]


# Triton's float32 dots in IEEE fp32, SGLang's attention and ours alike (``tree_verify_attention.sglang_fp32_dot``).
# At 600-1100 prompt tokens TF32's rounding alone parts plain SGLang from transformers' fp32 on this random target,
# so token identity at those lengths is only defined with exact dots.
EXACT_FP32_DOTS = {"TRITON_F32_DEFAULT": "ieee"}


@contextlib.contextmanager
def environment(**env: str):
    """``env`` in ``os.environ`` for the engines started inside (their processes inherit it), then restored."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def tiny_long_plain(tiny_models) -> list[dict]:
    """Plain fp32 outputs of 6 long prompts (``long_prompts``), with exact fp32 dots."""
    with environment(**EXACT_FP32_DOTS):
        (plain,) = run_engine(tiny_models[0], [long_prompts(6, seed=3)], greedy(64), dtype="float32")
    return plain


@pytest.fixture(scope="module")
def tiny_plain(tiny_models) -> list[dict]:
    """Plain fp32 outputs of 12 prompts submitted at once (over the graph's max bs of 4)."""
    (plain,) = run_engine(tiny_models[0], [tiny_prompts(12, seed=1)], greedy(64), dtype="float32")
    return plain


def jetspec_runs(tiny_models, overlap: bool = False, prompts: list[list[int]] | None = None, **env: str
                 ) -> tuple[list[dict], list[dict]]:
    """JETSPEC fp32 outputs of ``prompts`` (the same 12 as ``tiny_plain``'s by default), then 2 of them again
    (radix hits), under ``env``."""
    target, head = tiny_models
    prompts = prompts or tiny_prompts(12, seed=1)
    with environment(**{"JETSPEC_OVERLAP": "1" if overlap else "0", **env}):
        return tuple(run_engine(target, [prompts, prompts[:2]], greedy(64), dtype="float32",
                                disable_overlap_schedule=not overlap, speculative_algorithm="JETSPEC",
                                speculative_draft_model_path=head, **TREE))


@pytest.fixture(scope="module")
def tiny_runs(tiny_models, tiny_plain):
    """The budget follows the batch (``JETSPEC_VERIFY_TOKENS=128``, the Qwen3-8B shape's default): 48 nodes at
    bs 1-2 and 24 at bs 3-8, graphed up to bs 4 and eager above, so these runs switch verify plans as
    requests finish. (This model's own default cap, 8192 tokens, would never switch.) Greedy batches of graphed
    sizes take the direct verify path, which the engine must manage to use (``JETSPEC_DIRECT_VERIFY=required``)."""
    return (tiny_plain, *jetspec_runs(tiny_models, overlap=False, JETSPEC_VERIFY_TOKENS="128",
                                      JETSPEC_DIRECT_VERIFY="required"))


@pytest.fixture(scope="module")
def tiny_fixed_budget_runs(tiny_models, tiny_plain):
    """The same with the full budget at every batch size (``JETSPEC_VERIFY_TOKENS=0``)."""
    return (tiny_plain, *jetspec_runs(tiny_models, JETSPEC_VERIFY_TOKENS="0"))


@pytest.fixture(scope="module")
def tiny_overlap_runs(tiny_models, tiny_plain):
    """The same with overlap scheduling (``JETSPEC_OVERLAP=1``), switching budgets as ``tiny_runs`` does."""
    return (tiny_plain, *jetspec_runs(tiny_models, overlap=True, JETSPEC_VERIFY_TOKENS="128",
                                      JETSPEC_DIRECT_VERIFY="required"))


@pytest.fixture(scope="module")
def tiny_sglang_verify_input_runs(tiny_models, tiny_plain):
    """The same with verify inputs from SGLang's tree kernel instead of ours (``JETSPEC_VERIFY_INPUTS=sglang``)."""
    return (tiny_plain, *jetspec_runs(tiny_models, JETSPEC_VERIFY_INPUTS="sglang"))


@pytest.fixture(scope="module")
def tiny_sglang_attention_runs(tiny_models, tiny_plain):
    """The same with SGLang's verify attention (``JETSPEC_VERIFY_ATTENTION=sglang``) instead of our tree kernel,
    which the other runs take by default on the Triton backend."""
    return (tiny_plain, *jetspec_runs(tiny_models, JETSPEC_VERIFY_ATTENTION="sglang"))


@pytest.fixture(scope="module")
def tiny_replay_metadata_runs(tiny_models, tiny_plain):
    """``tiny_runs`` with SGLang's attention-metadata refill before every replay (``JETSPEC_GRAPH_METADATA=0``)
    instead of inside the head's graphs and skipped for the tree-attention target's."""
    return (tiny_plain, *jetspec_runs(tiny_models, overlap=False, JETSPEC_VERIFY_TOKENS="128",
                                      JETSPEC_GRAPH_METADATA="0"))


@pytest.fixture(scope="module")
def tiny_torch_draft_input_runs(tiny_models, tiny_plain):
    """``tiny_runs`` with the head's block inputs from six torch ops (``JETSPEC_DRAFT_INPUTS=torch``) instead of
    one launch of ``csrc/draft_inputs.cu``."""
    return (tiny_plain, *jetspec_runs(tiny_models, overlap=False, JETSPEC_VERIFY_TOKENS="128",
                                      JETSPEC_DRAFT_INPUTS="torch"))


@pytest.fixture(scope="module")
def tiny_torch_topk_runs(tiny_models, tiny_plain):
    """``tiny_runs`` with the head's vocabulary top-K from PyTorch's ``logsumexp`` and ``topk``
    (``JETSPEC_VOCAB_TOPK=torch``) instead of ``kernels.vocab_topk``."""
    return (tiny_plain, *jetspec_runs(tiny_models, overlap=False, JETSPEC_VERIFY_TOKENS="128",
                                      JETSPEC_DIRECT_VERIFY="required", JETSPEC_VOCAB_TOPK="torch"))


@pytest.fixture(scope="module")
def tiny_sglang_head_runs(tiny_models, tiny_plain):
    """``tiny_runs`` with the head's block attention through SGLang's Triton extend kernel
    (``JETSPEC_HEAD_ATTENTION=sglang``) instead of the tree kernel."""
    return (tiny_plain, *jetspec_runs(tiny_models, overlap=False, JETSPEC_VERIFY_TOKENS="128",
                                      JETSPEC_DIRECT_VERIFY="required", JETSPEC_HEAD_ATTENTION="sglang"))


@pytest.fixture(scope="module")
def tiny_sglang_verify_prep_runs(tiny_models, tiny_plain):
    """``tiny_runs`` with greedy verify through SGLang's preparation and graph runner (``JETSPEC_DIRECT_VERIFY=0``)
    instead of ``DirectVerify``'s five replays."""
    return (tiny_plain, *jetspec_runs(tiny_models, overlap=False, JETSPEC_VERIFY_TOKENS="128",
                                      JETSPEC_DIRECT_VERIFY="0"))


@pytest.fixture(scope="module")
def tiny_fused_graph_input_runs(tiny_models, tiny_plain):
    """``tiny_runs`` with the direct step's graph inputs written by one Triton launch each
    (``JETSPEC_GRAPH_INPUTS=fused``) instead of PyTorch's small ops."""
    return (tiny_plain, *jetspec_runs(tiny_models, overlap=False, JETSPEC_VERIFY_TOKENS="128",
                                      JETSPEC_DIRECT_VERIFY="required", JETSPEC_GRAPH_INPUTS="fused"))


@pytest.fixture(scope="module")
def tiny_fused_accept_walk_runs(tiny_models, tiny_plain):
    """``tiny_runs`` with graphed greedy acceptance in ``kernels.greedy_walk``'s one launch
    (``JETSPEC_ACCEPT_WALK=fused``) instead of SGLang's walk, bonus fill and slot compaction."""
    return (tiny_plain, *jetspec_runs(tiny_models, overlap=False, JETSPEC_VERIFY_TOKENS="128",
                                      JETSPEC_DIRECT_VERIFY="required", JETSPEC_ACCEPT_WALK="fused"))


@pytest.fixture(scope="module")
def tiny_fused_context_kv_runs(tiny_models, tiny_plain):
    """``tiny_runs`` with the head's context K/V from SGLang's fused KV materialization (``JETSPEC_CONTEXT_KV=fused``,
    which refuses to start where the head cannot take it)."""
    return (tiny_plain, *jetspec_runs(tiny_models, overlap=False, JETSPEC_VERIFY_TOKENS="128",
                                      JETSPEC_DIRECT_VERIFY="required", JETSPEC_CONTEXT_KV="fused"))


def first_difference(got: list[int], expected: list[int]) -> int | None:
    """Index of the first token where ``got`` parts from ``expected``, None where it does not."""
    return next((j for j, (a, b) in enumerate(zip(got, expected)) if a != b), None)


def assert_token_identical(plain: list[dict], spec: list[dict]) -> None:
    report = []
    for i, expected in enumerate(plain):
        got = spec[i]["output_ids"]
        first = first_difference(got, expected["output_ids"])
        report.append((i, first, spec[i]["meta_info"].get("spec_accept_length"), got[:12], expected["output_ids"][:12]))
    assert all(r[1] is None for r in report), report


def test_tiny_fp32_greedy_is_token_identical_to_plain(tiny_runs) -> None:
    assert_token_identical(tiny_runs[0], tiny_runs[1])


def assert_identical_with_radix_repeat(runs: tuple) -> None:
    """Plain vs a JETSPEC variant: token-identical, and the repeat of 2 prompts (radix hits) identical too."""
    plain, spec, repeat = runs
    assert_token_identical(plain, spec)
    assert [r["output_ids"] for r in repeat] == [r["output_ids"] for r in spec[:2]]


def test_tiny_fp32_overlap_is_token_identical_and_reuses_radix(tiny_overlap_runs) -> None:
    assert_identical_with_radix_repeat(tiny_overlap_runs)


def test_tiny_fp32_sglang_verify_inputs_are_token_identical(tiny_sglang_verify_input_runs) -> None:
    assert_identical_with_radix_repeat(tiny_sglang_verify_input_runs)


def test_tiny_fp32_sglang_attention_is_token_identical(tiny_sglang_attention_runs) -> None:
    assert_identical_with_radix_repeat(tiny_sglang_attention_runs)


def test_tiny_fp32_fixed_budget_is_token_identical(tiny_fixed_budget_runs) -> None:
    assert_identical_with_radix_repeat(tiny_fixed_budget_runs)


def test_tiny_fp32_graph_metadata_drafts_the_same_trees(tiny_runs, tiny_replay_metadata_runs) -> None:
    """Lossless either way; and the same accepted lengths request by request, i.e. the head drafted the same trees
    from metadata refilled inside its graphs as from SGLang's refill before each replay (a stale refill would change
    what the head attends to, and with it the drafts)."""
    assert_same_trees(tiny_runs, tiny_replay_metadata_runs)


def test_tiny_fp32_torch_draft_inputs_draft_the_same_trees(tiny_runs, tiny_torch_draft_input_runs) -> None:
    """The fused block inputs (``tiny_runs``) against the torch ops they replace: lossless either way, and the same
    accepted lengths request by request (a wrong slot or position would change what the head attends to)."""
    assert_same_trees(tiny_runs, tiny_torch_draft_input_runs)


def test_tiny_fp32_sglang_verify_prep_drafts_the_same_trees(tiny_runs, tiny_sglang_verify_prep_runs) -> None:
    """Direct verify (the default) against SGLang's verify preparation and runner: lossless either way, and the
    same accepted lengths request by request (a wrong KV slot, position or padding row would change them)."""
    assert_same_trees(tiny_runs, tiny_sglang_verify_prep_runs)


def test_tiny_fp32_fused_graph_inputs_draft_the_same_trees(tiny_runs, tiny_fused_graph_input_runs) -> None:
    """The direct step with its graph inputs from ``kernels.graph_inputs``' one-launch kernel: lossless, and every
    request's accepted length as with PyTorch's ops (the same drafted trees)."""
    assert_same_trees(tiny_runs, tiny_fused_graph_input_runs)


def test_tiny_fp32_fused_accept_walk_accepts_the_same_paths(tiny_runs, tiny_fused_accept_walk_runs) -> None:
    """Greedy acceptance by ``kernels.greedy_walk``: lossless, and every request's accepted length as with SGLang's
    walk (a wrong path, KV move or head commit would change the next trees, and with them the lengths)."""
    assert_same_trees(tiny_runs, tiny_fused_accept_walk_runs)


def test_tiny_fp32_fused_context_kv_is_lossless_and_drafts_as_well(tiny_runs, tiny_fused_context_kv_runs) -> None:
    """The head's context K/V by SGLang's stacked projection and one norm-and-RoPE kernel: lossless (the target
    decides), and the head drafts as well (mean accepted length within 5%; a wrong layer, position or slot would
    collapse it). Not the same trees request by request: the two paths round in different places."""
    assert_identical_with_radix_repeat(tiny_fused_context_kv_runs)
    accepted = [[o["meta_info"]["spec_accept_length"] for o in r[1]] for r in (tiny_fused_context_kv_runs, tiny_runs)]
    mean = [sum(a) / len(a) for a in accepted]
    assert mean[0] >= 0.95 * mean[1], mean


def test_tiny_fp32_vocab_topk_drafts_the_same_trees_fused_or_torch(tiny_runs, tiny_torch_topk_runs) -> None:
    """The fused vocabulary top-K (the default) against PyTorch's: lossless either way, and the same accepted
    lengths request by request (a wrong id, value or log-sum-exp would change the trees)."""
    assert_same_trees(tiny_runs, tiny_torch_topk_runs)


def test_tiny_fp32_tree_head_attention_is_lossless_and_drafts_as_well(tiny_runs, tiny_sglang_head_runs) -> None:
    """The head's attention through the tree kernel (the default) against SGLang's: lossless either way (the
    target decides; ``test_tiny_fp32_greedy_is_token_identical_to_plain`` covers the default), and the head
    drafts as well (mean accepted length within 5%; a wrong mask or slot would collapse it). Not the same trees
    request by request: the two kernels sum in different orders."""
    assert_identical_with_radix_repeat(tiny_sglang_head_runs)
    accepted = [[o["meta_info"]["spec_accept_length"] for o in r[1]] for r in (tiny_sglang_head_runs, tiny_runs)]
    mean = [sum(a) / len(a) for a in accepted]
    assert mean[1] >= 0.95 * mean[0], mean


@pytest.mark.parametrize("merge", ["kernel", "fused"])
def test_tiny_fp32_long_prompts_are_token_identical_whichever_merges_the_splits(tiny_models, tiny_long_plain,
                                                                                merge: str) -> None:
    """Prefixes of 600-1100 tokens, which the tree kernel splits: token-identical to plain SGLang in fp32 with
    the splits merged by the last split (the default) and by a second kernel (``JETSPEC_SPLIT_MERGE=kernel``).
    Both sides multiply in IEEE fp32 (``EXACT_FP32_DOTS``): with TF32 on both, both merges gave the same tokens and
    parted from plain SGLang on some prompts (H100, 2026-12-06)."""
    runs = jetspec_runs(tiny_models, prompts=long_prompts(6, seed=3), JETSPEC_VERIFY_TOKENS="128",
                        JETSPEC_DIRECT_VERIFY="required", JETSPEC_SPLIT_MERGE=merge, **EXACT_FP32_DOTS)
    assert_identical_with_radix_repeat((tiny_long_plain, *runs))


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory) -> tuple[str, str]:
    """A random fp32 Gemma-3 text model (8-token vocab; every second layer slides over a 16-token window, as
    Gemma-3's local layers do over 512) and a random causal head for it.

    Random Gemma-3 weights decode one token forever whatever the context: the embeddings, scaled up by
    sqrt(hidden) in the forward, swamp everything else. So the embeddings are scaled down by as much; then, in
    transformers (CPU, 2026-12-06), 7 of the test's 8 prompts decode differently with a window one key narrower,
    and no greedy choice is within 1.1e-3 logits of the runner-up. The LM head stays tied to the embeddings, as in
    Gemma-3's checkpoints: SGLang 0.5.17's Gemma-3 always scores with the embeddings and never loads an untied
    ``lm_head`` (an untied target parted from transformers at its first token on an H100, plain prefill included).
    """
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from jetspec_sglang import DraftHead, DraftHeadConfig

    root = tmp_path_factory.mktemp("gemma3")
    kinds = ("sliding_attention", "full_attention")
    config = Gemma3TextConfig(vocab_size=TINY_VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=6,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=64, query_pre_attn_scalar=64,
                              sliding_window=16, layer_types=[kinds[i % 2] for i in range(6)],
                              max_position_embeddings=2048, initializer_range=0.2, tie_word_embeddings=True,
                              bos_token_id=0, eos_token_id=1, pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).float()
    with torch.no_grad():
        model.model.embed_tokens.weight.div_(config.hidden_size**0.5)
    model.save_pretrained(root / "target")
    head = DraftHead(DraftHeadConfig.for_target(config, num_hidden_layers=2, block_size=8))
    head.float().save_pretrained(root / "head")
    return str(root / "target"), str(root / "head")


def transformers_greedy(model_path: str, prompts: list[list[int]], new_tokens: int, **config_changes
                        ) -> tuple[list[list[int]], list[list[float]]]:  # fmt: skip
    """transformers' fp32 greedy tokens of each prompt on the GPU, and at each token the gap between the two best
    logits; ``config_changes`` override the model's config (e.g. ``sliding_window``)."""
    from transformers import AutoModelForCausalLM

    torch.set_float32_matmul_precision("highest")  # IEEE fp32, as the engines' dots (EXACT_FP32_DOTS)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, **config_changes).cuda().eval()
    tokens, gaps = [], []
    with torch.no_grad():
        for prompt in prompts:
            ids, out, gap = torch.tensor([prompt], device="cuda"), [], []
            for _ in range(new_tokens):
                best = torch.topk(model(ids).logits[0, -1], 2)
                out.append(int(best.indices[0]))
                gap.append(float(best.values[0] - best.values[1]))
                ids = torch.cat([ids, best.indices[:1].view(1, 1)], dim=1)
            tokens.append(out)
            gaps.append(gap)
    return tokens, gaps


def test_tiny_fp32_sliding_window_target_decodes_as_transformers(tiny_gemma3) -> None:
    """Gemma-3's layer mix, every context past the window (3-40 prompt tokens, 64 new): sliding-window and full
    layers all verify through our kernel, each node windowed by its own position, and the head reads the target
    through the residual-adding capture hooks (``sglang/layer_capture.py``).

    The reference is transformers' fp32 greedy decoding, not plain SGLang: SGLang 0.5.17's Triton decode gives a
    sliding layer one key fewer than its window (``min(seq_lens, sliding_window_size)`` keys, the current token
    included), while its prefill, transformers and our kernel give ``sliding_window_size + 1``. The window must
    matter here: one key narrower, transformers decodes differently. A request may part from the reference only
    where float32 puts the two best tokens within 1e-3."""
    prompts = tiny_prompts(8, seed=7)
    want, gaps = transformers_greedy(tiny_gemma3[0], prompts, 64)
    narrower, _ = transformers_greedy(tiny_gemma3[0], prompts, 64, sliding_window=15)
    assert want != narrower, "this target's tokens must depend on the window's width"
    spec, repeat = jetspec_runs(tiny_gemma3, prompts=prompts, **EXACT_FP32_DOTS)
    parted = [(i, first_difference(out["output_ids"], expected)) for i, (out, expected) in enumerate(zip(spec, want))]
    assert all(j is None or gaps[i][j] < 1e-3 for i, j in parted), [(i, j, gaps[i][j]) for i, j in parted
                                                                    if j is not None]
    assert [r["output_ids"] for r in repeat] == [r["output_ids"] for r in spec[:2]]


def assert_same_trees(runs: tuple, other: tuple) -> None:
    """``other`` is lossless, and each request's accepted length equals its length in ``runs``."""
    assert_identical_with_radix_repeat(other)
    accepted = [[o["meta_info"]["spec_accept_length"] for o in r[1]] for r in (runs, other)]
    assert accepted[0] == accepted[1]


def test_tiny_fp32_accepts_several_tokens_per_step(tiny_runs) -> None:
    _, spec, _ = tiny_runs
    accept = [o["meta_info"]["spec_accept_length"] for o in spec]
    assert sum(accept) / len(accept) > 1.5, accept


def test_tiny_radix_reuse_keeps_outputs(tiny_runs) -> None:
    _, spec, repeat = tiny_runs
    for again, first in zip(repeat, spec):
        assert again["meta_info"]["cached_tokens"] > 0, "the repeat should hit the radix cache"
        assert again["output_ids"] == first["output_ids"]


def test_tiny_fp32_sampling_keeps_the_target_distribution(tiny_models) -> None:
    """T = 1: each of the first speculative tokens (positions 1-3; position 0 comes from prefill) has the
    same law under JETSPEC as under plain SGLang: a two-sample chi-square test per position over 4000
    samples each, rare tokens pooled, p > 1e-3. JETSPEC feeds its tree to SGLang's tree sampling."""
    from scipy.stats import chi2_contingency

    target, head = tiny_models
    prompts = tiny_prompts(1, seed=5) * 4000
    sampling = {"temperature": 1.0, "max_new_tokens": 4, "ignore_eos": True}
    batch = dict(dtype="float32", max_running_requests=64)
    (plain,) = run_engine(target, [prompts], sampling, **batch)
    (spec,) = run_engine(target, [prompts], sampling, **batch, disable_overlap_schedule=True,
                         speculative_algorithm="JETSPEC", speculative_draft_model_path=head, **TREE)
    for position in (1, 2, 3):
        counts = torch.zeros(2, TINY_VOCAB, dtype=torch.int64)
        for row, outs in enumerate((plain, spec)):
            counts[row] += torch.bincount(torch.tensor([o["output_ids"][position] for o in outs]), minlength=TINY_VOCAB)
        common = counts.sum(0) >= 20
        table = torch.cat([counts[:, common], counts[:, ~common].sum(1, keepdim=True)], dim=1)
        table = table[:, table.sum(0) > 0]
        p_value = chi2_contingency(table.numpy()).pvalue if table.shape[1] > 1 else 1.0
        assert p_value > 1e-3, (position, table.tolist(), p_value)


def test_tiny_overlap_steps_never_sync_the_host(tiny_models, tmp_path) -> None:
    """Issue 5: under overlap scheduling a steady-state JETSPEC decode step makes no host sync
    (PyTorch's sync debug mode, counted by ``JETSPEC_SYNC_CHECK`` after 8 warm-up steps)."""
    from concurrent.futures import ThreadPoolExecutor

    from jetspec_sglang.sglang.sync_check import LOG_PREFIX

    target, head = tiny_models
    log = tmp_path / "server.log"
    args = ["--attention-backend", "triton", "--sampling-backend", "pytorch", "--random-seed", "0", "--dtype", "float32",
            "--mem-fraction-static", MEM_FRACTION, "--max-running-requests", "8", "--cuda-graph-max-bs-decode", "4",
            "--skip-tokenizer-init", "--speculative-algorithm", "JETSPEC", "--speculative-draft-model-path", head,
            *(f"--{k.replace('_', '-')}={v}" for k, v in TREE.items())]
    env = {"JETSPEC_OVERLAP": "1", "JETSPEC_SYNC_CHECK": "8", "JETSPEC_VERIFY_TOKENS": "128",  # budgets switch too
           "JETSPEC_DIRECT_VERIFY": "required"}
    with SGLangServer(target, 30110, args, log_path=str(log), env=env) as server:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda ids: generate(server, ids, greedy(96)), tiny_prompts(4, seed=3)))
    reports = [line.split(LOG_PREFIX, 1)[1] for line in log.read_text().splitlines() if LOG_PREFIX in line]
    assert reports, "the sync counter logged nothing: did the server run JETSPEC decode steps?"
    assert reports[-1].startswith(": 0 in "), reports


# ----------------------------------------------------------------- SmolLM2
SMOL = os.environ.get("JETSPEC_SMOLLM2")
needs_smol = pytest.mark.skipif(not SMOL, reason="set JETSPEC_SMOLLM2 to a SmolLM2-135M-Instruct HF folder")
QUESTIONS = [
    "What is 17*23? Think step by step.",
    "Tom has 5 apples and buys 12 more. He gives away 4. How many apples does he have?",
    "Write a Python function that checks whether a number is prime.",
    "Explain why the sky is blue in two sentences.",
    "A train travels 60 km in 45 minutes. What is its speed in km/h?",
    "List three uses of a paperclip.",
    "What is the capital of Australia and why is it not Sydney?",
    "Summarize the water cycle.",
]


@pytest.fixture(scope="module")
def smol_head(tmp_path_factory) -> str:
    if os.environ.get("JETSPEC_HEAD"):
        return os.environ["JETSPEC_HEAD"]
    from transformers import AutoConfig

    from jetspec_sglang import DraftHead, DraftHeadConfig

    torch.manual_seed(0)
    config = DraftHeadConfig.for_target(AutoConfig.from_pretrained(SMOL), num_hidden_layers=2, block_size=16)
    path = tmp_path_factory.mktemp("smol") / "head"
    DraftHead(config).save_pretrained(path, dtype=torch.bfloat16)
    return str(path)


def generate(server: SGLangServer, input_ids: list[int], sampling: dict) -> dict:
    return server.post("/generate", {"input_ids": input_ids, "sampling_params": sampling})


def server_args(**kw) -> list[str]:
    args = ["--attention-backend", SMOL_ATTENTION_BACKEND, "--sampling-backend", "pytorch", "--random-seed", "0",
            "--mem-fraction-static", MEM_FRACTION, "--max-running-requests", "32", "--cuda-graph-max-bs-decode", "8"]
    for key, value in kw.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def chat_ids(tokenizer, question: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)  # transformers 5.12 returns a BatchEncoding


@pytest.fixture(scope="module")
def smol_plain_outputs() -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(SMOL)
    server = SGLangServer(SMOL, 30100, server_args())
    try:
        return [generate(server, chat_ids(tokenizer, q), greedy(160))["output_ids"] for q in QUESTIONS]
    finally:
        server.close()


@pytest.fixture(scope="module", params=["non-overlap", "overlap"])
def smol_jetspec(smol_head, request):
    """A JETSPEC server, without and with overlap scheduling (``JETSPEC_OVERLAP=1``): every SmolLM2 test runs on both."""
    overlap = request.param == "overlap"
    server = SGLangServer(SMOL, 30101 + overlap, server_args(speculative_algorithm="JETSPEC",
                                                             speculative_draft_model_path=smol_head,
                                                             speculative_num_draft_tokens=64),
                          env={"JETSPEC_OVERLAP": "1" if overlap else "0"})
    yield server
    server.close()


def fp32_gap(prefix: list[int], token_a: int, token_b: int) -> float:
    """float32 logit gap between two candidate next tokens (HF transformers, same weights)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(SMOL, dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        logits = model(torch.tensor([prefix], device="cuda")).logits[0, -1]
    return float(logits[token_a] - logits[token_b])


@needs_smol
def test_smollm2_bf16_outputs_match_plain_up_to_near_ties(smol_plain_outputs, smol_jetspec) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(SMOL)
    identical, report, accept = 0, [], []
    for question, expected in zip(QUESTIONS, smol_plain_outputs):
        prompt = chat_ids(tokenizer, question)
        out = generate(smol_jetspec, prompt, greedy(160))
        got = out["output_ids"]
        accept.append(out["meta_info"]["spec_accept_length"])
        if got == expected:
            identical += 1
            continue
        first = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
        gap = fp32_gap(prompt + expected[:first], expected[first], got[first])
        report.append((question[:30], first, round(gap, 3)))
    Path(os.environ.get("OUT", "/tmp")).joinpath("smol_equality.json").write_text(
        json.dumps({"identical": identical, "total": len(QUESTIONS), "divergences": report, "accept": accept}))
    assert all(abs(gap) < 0.3 for _, _, gap in report), f"a divergence is not a near tie: {report}"
    assert min(accept) >= 1.0


@needs_smol
def test_smollm2_reports_accept_length_in_server_info(smol_jetspec) -> None:
    info = smol_jetspec.get("/server_info")
    assert info["internal_states"][0]["avg_spec_accept_length"] >= 1.0


def stream_chat(url: str, question: str, max_tokens: int, stop_after: int | None = None) -> tuple[str, str | None]:
    """One streaming OpenAI chat completion; returns the text and finish reason (None if cut short)."""
    import requests

    body = {"model": "default", "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    text, finish, chunks = "", None, 0
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            text += choice["delta"].get("content") or ""
            finish = choice.get("finish_reason") or finish
            chunks += 1
            if stop_after is not None and chunks >= stop_after:
                return text, None  # closing the stream aborts the request server-side
    return text, finish


@needs_smol
def test_smollm2_32_concurrent_streams_and_abort(smol_jetspec) -> None:
    results: dict[int, tuple[str, str | None]] = {}

    def worker(i: int) -> None:
        results[i] = stream_chat(smol_jetspec.url, QUESTIONS[i % len(QUESTIONS)], 96)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    aborted = threading.Thread(target=lambda: results.__setitem__(-1, stream_chat(
        smol_jetspec.url, "Write a very long story about a dragon.", 2000, stop_after=5)))
    for t in threads + [aborted]:
        t.start()
    for t in threads + [aborted]:
        t.join(timeout=300)
    assert all(results[i][1] in ("stop", "length") and results[i][0] for i in range(32)), results
    # Same question, same greedy text, whatever the batch it landed in (up to bf16 near ties).
    assert sum(results[i][0] == results[i + 8][0] for i in range(24)) >= 20
    time.sleep(3)  # idle: SGLang's strict memory check runs and would kill the server on a leak
    again = generate(smol_jetspec, [1, 2, 3, 4], greedy(8))
    assert len(again["output_ids"]) == 8
