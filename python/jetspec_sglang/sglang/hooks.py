"""``HookRegistry`` hooks that give JETSPEC what SGLang 0.5.17 grants only builtin algorithms.

Each hook names the symbol it wraps and passes every other algorithm through untouched.

- ``DecodeCudaGraphRunner.get_spec_info`` and ``spec_info.create_dummy_verify_input``:
  capture-time spec inputs. The target's verify graph needs an ``EagleVerifyInput``
  carrying the mask buffer and FULL hidden capture (the tap features); the draft's
  block graph needs a mask-free ``DFlashVerifyInput`` (causal block, no capture).
- ``PrefillCudaGraphRunner.capture``: the target's prefill graphs capture FULL hidden states
  (the tap features the head's context K/V is written from), which SGLang grants only EAGLE
  and DFLASH targets; without it every JETSPEC prefill runs eagerly.
- ``DefaultPoolConfigurator.__init__``: budget the draft head's KV pool next to the
  target's, as SGLang does for EAGLE.
- ``allocation_sizing.get_req_to_token_extra_context_len``: room in each
  ``req_to_token`` row for a step's tree reservation near the context limit.
- ``MultiPlatformOp.forward``, only with ``JETSPEC_FP32_NATIVE_OPS=1``: sglang-kernel
  0.4.5's CUDA RMSNorm (and other fused ops) has no float32 kernel, so ``--dtype
  float32`` crashes; this sends float32 inputs to SGLang's own ``forward_native``.
  Strict token-equality tests need fp32 (bf16 runs part ways at near ties).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from .spec_algo import ALGORITHM_NAME

GET_SPEC_INFO = "sglang.srt.model_executor.runner.decode_cuda_graph_runner.DecodeCudaGraphRunner.get_spec_info"
CREATE_DUMMY_VERIFY_INPUT = "sglang.srt.speculative.spec_info.create_dummy_verify_input"
PREFILL_GRAPH_CAPTURE = "sglang.srt.model_executor.runner.prefill_cuda_graph_runner.PrefillCudaGraphRunner.capture"
POOL_CONFIGURATOR_INIT = "sglang.srt.model_executor.pool_configurator.DefaultPoolConfigurator.__init__"
EXTRA_CONTEXT_LEN = "sglang.srt.mem_cache.allocation_sizing.get_req_to_token_extra_context_len"
MULTI_PLATFORM_FORWARD = "sglang.srt.layers.utils.multi_platform.MultiPlatformOp.forward"
FP32_NATIVE_OPS_ENV = "JETSPEC_FP32_NATIVE_OPS"


def is_jetspec(spec_algorithm: Any) -> bool:
    return getattr(spec_algorithm, "name", None) == ALGORITHM_NAME


def capture_spec_info(*, is_draft_worker: bool, custom_mask, num_tokens_per_req: int, num_steps: int, topk: int):
    """The spec input a JETSPEC verify graph is captured with."""
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode

    if is_draft_worker:
        from sglang.srt.speculative.dflash_info import DFlashVerifyInput

        return DFlashVerifyInput(
            draft_token=None,
            positions=None,
            draft_token_num=num_tokens_per_req,
            custom_mask=None,
            capture_hidden_mode=CaptureHiddenMode.NULL,
        )
    from sglang.srt.speculative.eagle_info import EagleVerifyInput

    return EagleVerifyInput(
        draft_token=None,
        custom_mask=custom_mask,
        positions=None,
        retrieve_index=None,
        retrieve_next_token=None,
        retrieve_next_sibling=None,
        retrieve_cum_len=None,
        spec_steps=num_steps,
        topk=topk,
        draft_token_num=num_tokens_per_req,
        capture_hidden_mode=CaptureHiddenMode.FULL,
        seq_lens_sum=None,
        seq_lens_cpu=None,
    )


def get_spec_info_around(original: Callable, runner: Any, num_tokens: int):
    model_runner = runner.model_runner
    if not is_jetspec(model_runner.spec_algorithm):
        return original(runner, num_tokens)
    return capture_spec_info(
        is_draft_worker=model_runner.is_draft_worker,
        custom_mask=runner.buffers.custom_mask,
        num_tokens_per_req=runner.captured_req_width,
        num_steps=runner.speculative_num_steps,
        topk=model_runner.server_args.speculative_eagle_topk,
    )


def create_dummy_verify_input_around(
    original: Callable, spec_algorithm, server_args, custom_mask, num_tokens_per_req: int, is_draft_worker: bool
):
    if not is_jetspec(spec_algorithm):
        return original(spec_algorithm, server_args, custom_mask, num_tokens_per_req, is_draft_worker)
    return capture_spec_info(
        is_draft_worker=is_draft_worker,
        custom_mask=custom_mask,
        num_tokens_per_req=num_tokens_per_req,
        num_steps=server_args.speculative_num_steps,
        topk=server_args.speculative_eagle_topk,
    )


def prefill_graph_capture_before(runner: Any) -> None:
    """Capture a JETSPEC target's prefill graphs with FULL hidden states, as SGLang does for DFLASH targets."""
    model_runner = runner.model_runner
    if not is_jetspec(model_runner.spec_algorithm) or model_runner.is_draft_worker:
        return None
    mode = runner.capture_hidden_mode  # a CaptureHiddenMode
    runner.capture_hidden_mode = max(mode, type(mode).FULL)
    return None


def pool_configurator_after(result: None, configurator: Any, kvc: Any) -> None:
    """Grow the per-token KV cost by the head's layers, so both pools fit in the budget."""
    if not is_jetspec(kvc.spec_algorithm) or kvc.is_draft_worker:
        return None
    target_layers = int(kvc.layer_info.num_effective_layers)
    head_config = Path(kvc.server_args.speculative_draft_model_path) / "config.json"
    draft_layers = int(json.loads(head_config.read_text())["num_hidden_layers"])
    if target_layers > 0 and configurator._cell_size:
        configurator._cell_size = int(configurator._cell_size * (1 + draft_layers / target_layers))
    return None


def extra_context_len_around(original: Callable, server_args: Any) -> int:
    extra = original(server_args)
    if server_args.speculative_algorithm != ALGORITHM_NAME:
        return extra
    from sglang.srt.mem_cache.allocation_sizing import get_alloc_reserve_per_decode

    return max(extra, get_alloc_reserve_per_decode(server_args) + 4)


def fp32_native_ops_around(original: Callable, op: Any, *args: Any, **kwargs: Any):
    import torch

    if any(isinstance(a, torch.Tensor) and a.dtype == torch.float32 for a in args):
        return op.forward_native(*args, **kwargs)
    return original(op, *args, **kwargs)


def register_hooks() -> None:
    """Register every hook; SGLang's ``load_plugins`` applies them right after the plugins run."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(GET_SPEC_INFO, get_spec_info_around, HookType.AROUND)
    HookRegistry.register(CREATE_DUMMY_VERIFY_INPUT, create_dummy_verify_input_around, HookType.AROUND)
    HookRegistry.register(PREFILL_GRAPH_CAPTURE, prefill_graph_capture_before, HookType.BEFORE)
    HookRegistry.register(POOL_CONFIGURATOR_INIT, pool_configurator_after, HookType.AFTER)
    HookRegistry.register(EXTRA_CONTEXT_LEN, extra_context_len_around, HookType.AROUND)
    if os.environ.get(FP32_NATIVE_OPS_ENV) == "1":
        HookRegistry.register(MULTI_PLATFORM_FORWARD, fp32_native_ops_around, HookType.AROUND)


def assert_hooks_applied() -> None:
    """Fail loudly at worker start if a hook did not land (SGLang only logs hook failures)."""
    from pkgutil import resolve_name

    hooked = (GET_SPEC_INFO, CREATE_DUMMY_VERIFY_INPUT, PREFILL_GRAPH_CAPTURE, POOL_CONFIGURATOR_INIT, EXTRA_CONTEXT_LEN)
    missing = [t for t in hooked if not hasattr(resolve_name(t), "__wrapped__")]
    if missing:
        raise RuntimeError(
            f"JETSPEC hooks are not installed on {missing}; check the sglang.srt.plugins entry point "
            "(`pip show jetspec-sglang`, SGLANG_PLUGINS) and the startup log for hook errors"
        )
