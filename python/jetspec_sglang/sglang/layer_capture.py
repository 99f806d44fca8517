"""The target layers' outputs the head reads, captured inside the target's forward (SGLang's aux hidden states).

Most sglang 0.5.17 models expose ``set_dflash_layers_to_capture``. Gemma-3 (``Gemma3ForCausalLM``) has only
EAGLE-3's capture, and its layers return their MLP branch and the residual stream apart (the next layer's norm
adds them), so EAGLE-3's capture holds a layer's branch without the residual. A head is trained on HF's
``hidden_states``, which hold the sum. ``capture_layers`` therefore sets EAGLE-3's capture on such a model and
has each tapped layer's output added to its residual inside the model's forward, so that the features the head reads
are the layer's whole output, as in training. This only reads: the target computes exactly what it computes without
it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

# Models whose layers return (branch, residual) and that expose only EAGLE-3's capture, whose captured feature is
# the branch alone (sglang 0.5.17: gemma3_causal.py).
RESIDUAL_SPLIT_MODELS = ("Gemma3ForCausalLM",)


def capture_layers(model: Any, layer_ids: Sequence[int]) -> None:
    """Make ``model``'s forward return the outputs of layers ``layer_ids`` (0-based) as its aux hidden states, in
    layer order; refuses, with the fix, a model that cannot and a tap on the last layer."""
    layer_ids = sorted(int(i) for i in layer_ids)
    last = int(model.config.num_hidden_layers) - 1
    if layer_ids and layer_ids[-1] >= last:
        raise ValueError(f"the head reads layer {layer_ids[-1]}, but {type(model).__name__} has layers 0-{last}, and "
                         f"transformers' hidden_states hold its last layer after the final norm, which no sglang "
                         f"capture applies: train the head on target_layer_ids below {last}")
    if hasattr(model, "set_dflash_layers_to_capture"):
        model.set_dflash_layers_to_capture(layer_ids)
        return
    name = type(model).__name__
    if name in RESIDUAL_SPLIT_MODELS and hasattr(model, "set_eagle3_layers_to_capture"):
        model.set_eagle3_layers_to_capture(layer_ids)
        add_residuals_to_captures(model.model, layer_ids)
        return
    raise ValueError(f"{name} cannot expose layer features to a draft head in sglang 0.5.17 (no "
                     f"set_dflash_layers_to_capture); JETSPEC supports the families that have it (Llama, Qwen3, ...) "
                     f"and {', '.join(RESIDUAL_SPLIT_MODELS)}")


def add_residuals_to_captures(decoder: torch.nn.Module, layer_ids: Sequence[int]) -> None:
    """Make ``decoder`` (a model whose ``layers[i]`` return ``(branch, residual)`` and whose forward returns
    ``(hidden, [captured, ...])``) return ``branch + residual`` of each tapped layer as its captured features.

    Hooks on the tapped layers keep their outputs, and the decoder's ``forward`` (an instance attribute, so
    ``__call__`` and SGLang's graph runners find it) swaps them in. Both run inside the decoder's forward, so a CUDA
    graph captured from it computes the sums itself: SGLang's breakable prefill graph replays the decoder by putting
    its own function in place of ``forward``, and then no Python around the layers runs.
    """
    outputs: dict[int, torch.Tensor] = {}

    def keep_output(layer_id: int):
        def hook(module: torch.nn.Module, args: Any, output: tuple) -> None:
            branch, residual = output
            outputs[layer_id] = branch if residual is None else branch + residual

        return hook

    forward = decoder.forward

    def forward_with_whole_outputs(*args: Any, **kwargs: Any) -> Any:
        output = forward(*args, **kwargs)
        if not (isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], list)):
            return output  # no capture this forward
        if len(output[1]) != len(layer_ids):
            raise RuntimeError(f"{type(decoder).__name__} captured {len(output[1])} features, expected "
                               f"{len(layer_ids)} (layers {list(layer_ids)})")
        return output[0], [outputs.pop(i) for i in layer_ids]

    for layer_id in layer_ids:
        decoder.layers[layer_id].register_forward_hook(keep_output(layer_id))
    decoder.forward = forward_with_whole_outputs
