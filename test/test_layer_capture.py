"""The head reads each tapped layer's whole output, on targets whose layers return the residual apart (Gemma-3)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from jetspec_sglang.sglang.layer_capture import capture_layers


class SplitLayer(torch.nn.Module):
    """A layer that returns its branch and the residual stream apart; the next layer adds them first, as
    sglang 0.5.17's Gemma-3 layers do inside their fused add-and-norm."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, width)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        residual = hidden if residual is None else hidden + residual
        return torch.tanh(self.linear(residual)), residual


class SplitDecoder(torch.nn.Module):
    """Captures, as EAGLE-3 does on such a model, what enters each layer of ``layers_to_capture`` (ids shifted by
    one): the previous layer's branch, without its residual."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(SplitLayer(width) for _ in range(depth))
        self.layers_to_capture: list[int] = []

    def forward(self, hidden: torch.Tensor):
        captured, residual = [], None
        for i, layer in enumerate(self.layers):
            if i in self.layers_to_capture:
                captured.append(hidden)
            hidden, residual = layer(hidden, residual)
        if len(self.layers) in self.layers_to_capture:
            captured.append(hidden)
        hidden = hidden + residual
        return (hidden, captured) if captured else hidden


class Gemma3ForCausalLM(torch.nn.Module):
    """Named as the model ``capture_layers`` knows; EAGLE-3's capture only."""

    def __init__(self, width: int = 8, depth: int = 5) -> None:
        super().__init__()
        self.model = SplitDecoder(width, depth)
        self.config = SimpleNamespace(num_hidden_layers=depth)

    def set_eagle3_layers_to_capture(self, layer_ids: list[int]) -> None:
        self.model.layers_to_capture = [i + 1 for i in layer_ids]


def whole_outputs(decoder: SplitDecoder, hidden: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's branch plus residual: the layer outputs HF's ``hidden_states`` hold."""
    outputs, residual = [], None
    for layer in decoder.layers:
        hidden, residual = layer(hidden, residual)
        outputs.append(hidden + residual)
    return outputs


@pytest.mark.parametrize("layer_ids", [[3, 0, 2], [1], [0, 1, 2, 3]])
def test_split_residual_targets_capture_each_tapped_layers_whole_output(layer_ids: list[int]) -> None:
    torch.manual_seed(0)
    model = Gemma3ForCausalLM()
    x = torch.randn(5, 8)
    plain = model.model(x)  # no capture set: the hidden state alone
    capture_layers(model, layer_ids)
    hidden, captured = model.model(x)
    torch.testing.assert_close(hidden, plain, rtol=0, atol=0)  # the hooks only read
    want = whole_outputs(model.model, x)
    assert len(captured) == len(layer_ids)
    for got, layer_id in zip(captured, sorted(layer_ids)):
        torch.testing.assert_close(got, want[layer_id])
    assert len(model.model(x)[1]) == len(layer_ids)  # every forward, not the first only


def test_a_graph_replay_in_place_of_the_decoders_forward_returns_whole_outputs() -> None:
    """SGLang's breakable prefill graph records the decoder's forward once, then replays it by putting its own
    function in place of ``decoder.forward`` (``prefill_cuda_graph_runner._execute_body_capture``): no layer runs in
    Python then. The features must already be whole in what was recorded."""
    torch.manual_seed(0)
    model = Gemma3ForCausalLM()
    capture_layers(model, [1, 3])
    x = torch.randn(5, 8)
    recorded = model.model.forward(x)  # what a capture records (a static output)
    model.model.forward = lambda *args, **kwargs: recorded  # the replay, as SGLang installs it
    want = whole_outputs(model.model, x)
    for _ in range(2):  # every replay
        hidden, captured = model.model(x)
        for got, layer_id in zip(captured, [1, 3]):
            torch.testing.assert_close(got, want[layer_id])


class Llama:
    config = SimpleNamespace(num_hidden_layers=12)

    def set_dflash_layers_to_capture(self, layer_ids: list[int]) -> None:
        self.layer_ids = layer_ids


def test_models_with_dflash_capture_use_it() -> None:
    model = Llama()
    capture_layers(model, (9, 1, 5))
    assert model.layer_ids == [1, 5, 9]


@pytest.mark.parametrize("model", [Llama(), Gemma3ForCausalLM(depth=5)], ids=["llama", "gemma3"])
def test_a_tap_on_the_last_layer_is_refused(model) -> None:
    """transformers' hidden_states hold the last layer after the final norm; sglang's captures never apply it."""
    last = model.config.num_hidden_layers - 1
    with pytest.raises(ValueError, match=rf"reads layer {last}, .* target_layer_ids below {last}"):
        capture_layers(model, [1, last])


def test_other_models_are_refused_with_the_families_that_work() -> None:
    class Phi4Flash:
        config = SimpleNamespace(num_hidden_layers=4)

        def set_eagle3_layers_to_capture(self, layer_ids: list[int]) -> None:
            pass

    with pytest.raises(ValueError, match=r"Phi4Flash cannot expose layer features .* and Gemma3ForCausalLM"):
        capture_layers(Phi4Flash(), [1])


def test_a_capture_that_misses_tapped_layers_fails_loudly() -> None:
    model = Gemma3ForCausalLM(depth=4)
    capture_layers(model, [0, 2])
    model.model.layers_to_capture = [1]  # someone else's capture setting
    with pytest.raises(RuntimeError, match=r"captured 1 features, expected 2 \(layers \[0, 2\]\)"):
        model.model(torch.randn(2, 8))
