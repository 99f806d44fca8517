"""``jetspec generate-data``: regenerate training responses with the target model.

Prompts come from ``jetspec_sglang.datasets.load_training_prompts`` (ShareGPT
first turns, checked disjoint from the evaluation sets), or from a file that
``jetspec export-prompts`` wrote (for machines without the data wheels), plus
optional procedural math word problems.
Each prompt is rendered with the target's chat template (thinking off) and
answered once per temperature (default greedy and 0.8), by SGLang's offline
``Engine`` (``--backend sglang``) or HF ``generate`` (``--backend hf``).
Token ids go to parquet shards (see ``token_data``) with a ``manifest.json``;
shards already on disk are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

import torch

from ..datasets import render_prompt
from .math_problems import math_word_problems
from .prompt_export import read_prompts
from .token_data import FORMAT, MANIFEST_NAME, shard_name, write_json_atomic, write_shard

Messages = list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class Job:
    """One response to generate."""

    prompt_index: int
    source: str
    prompt_ids: tuple[int, ...]
    temperature: float


class Generator(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], temperature: float, seed: int) -> list[tuple[list[int], bool]]:
        """Responses (ending in eos when finished) and whether each finished."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="HF folder (or hub id) of the target model")
    parser.add_argument("--output", required=True, help="data directory to write (resumes if it exists)")
    parser.add_argument("--num-prompts", type=int, default=0, help="prompts from jetspec_sglang.datasets")
    parser.add_argument("--prompts-file", default=None,
                        help="prompts from `jetspec export-prompts` instead of the data wheels (first --num-prompts)")
    parser.add_argument("--math-problems", type=int, default=0, help="procedural math word problems to add")
    parser.add_argument("--temperatures", default="0,0.8", help="comma-separated; one response per prompt each")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--max-prompt-tokens", type=int, default=1024, help="longer prompts are skipped")
    parser.add_argument("--backend", choices=("sglang", "hf"), default="sglang")
    parser.add_argument("--batch-size", type=int, default=32, help="HF backend: prompts per generate call")
    parser.add_argument("--shard-size", type=int, default=2048, help="responses per parquet shard")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="HF backend device (default: cuda if available)")
    parser.add_argument("--dtype", default="bfloat16", help="model dtype (HF on CPU always uses float32)")
    parser.add_argument("--mem-fraction-static", type=float, default=0.8, help="SGLang KV-cache memory share")
    parser.add_argument("--engine-args", default="{}",
                        help='extra sglang.Engine kwargs as JSON, e.g. \'{"attention_backend": "triton"}\'')


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    temperatures = [float(t) for t in str(args.temperatures).split(",") if t.strip()]
    tokenizer = AutoTokenizer.from_pretrained(args.target)
    prompts = collect_prompts(args.num_prompts, args.math_problems, args.seed, args.prompts_file)
    jobs, skipped = build_jobs(tokenizer, prompts, temperatures, args.max_prompt_tokens)
    if not jobs:
        raise SystemExit("no prompts to answer: pass --num-prompts and/or --math-problems")
    manifest = start_manifest(out, args, tokenizer, temperatures, jobs, skipped)
    shards = [jobs[i : i + args.shard_size] for i in range(0, len(jobs), args.shard_size)]
    todo = [i for i in range(len(shards)) if not (out / shard_name(i)).exists()]
    done_jobs = len(jobs) - sum(len(shards[i]) for i in todo)
    generator: Optional[Generator] = None
    bar = tqdm(total=len(jobs), initial=done_jobs, unit="resp", desc="generate-data")
    try:
        for i in todo:
            generator = generator or make_generator(args, tokenizer)
            rows = answer_shard(generator, shards[i], seed=args.seed * 100_003 + i)
            write_shard(out / shard_name(i), rows)
            bar.update(len(rows))
    finally:
        bar.close()
        if generator is not None and hasattr(generator, "shutdown"):
            generator.shutdown()
    finish_manifest(out, manifest, len(shards))
    return 0


def collect_prompts(num_dataset: int, num_math: int, seed: int,
                    prompts_file: Optional[str] = None) -> list[tuple[str, Messages]]:
    """``(source, messages)`` pairs: dataset (or ``prompts_file``) prompts first, then procedural math."""
    prompts: list[tuple[str, Messages]] = []
    if prompts_file is not None:
        rows = read_prompts(Path(prompts_file))[:num_dataset] if num_dataset > 0 else []
        _check_disjoint_if_possible(rows)
        prompts += [(str(r["source"]), user_turns(r["messages"])) for r in rows]
    elif num_dataset > 0:
        datasets = importlib.import_module("jetspec_sglang.datasets")
        loaded = datasets.load_training_prompts(num_dataset, seed)
        datasets.assert_disjoint_from_eval(loaded)
        for p in loaded:
            prompts.append((str(p.dataset), user_turns(p.messages)))
    prompts += [("procedural-math", m) for m in math_word_problems(num_math, seed)]
    return prompts


def _check_disjoint_if_possible(rows: Sequence[dict[str, Any]]) -> None:
    """Re-check exported prompts against the evaluation sets where their wheels are installed."""
    datasets = importlib.import_module("jetspec_sglang.datasets")
    prompts = [datasets.Prompt(str(r.get("id", i)), str(r["source"]), r["messages"]) for i, r in enumerate(rows)]
    try:
        datasets.assert_disjoint_from_eval(prompts)
    except (ModuleNotFoundError, FileNotFoundError) as err:
        print(f"generate-data: evaluation sets not installed, prompts file not re-checked ({err})")


def user_turns(messages: Sequence[Any]) -> Messages:
    """Plain ``{"role", "content"}`` dicts without trailing assistant turns (they are regenerated)."""
    msgs = [{"role": str(_field(m, "role")), "content": str(_field(m, "content"))} for m in messages]
    while msgs and msgs[-1]["role"] == "assistant":
        msgs.pop()
    if not msgs:
        raise ValueError("a training prompt has no user turn")
    return msgs


def _field(message: Any, name: str) -> Any:
    return message[name] if isinstance(message, dict) else getattr(message, name)


def build_jobs(
    tokenizer: Any, prompts: Sequence[tuple[str, Messages]], temperatures: Sequence[float], max_prompt_tokens: int
) -> tuple[list[Job], int]:
    """One job per (prompt, temperature), prompt-major; prompts over the limit are skipped and counted."""
    jobs: list[Job] = []
    skipped = 0
    for index, (source, messages) in enumerate(prompts):
        ids = tuple(render_prompt(tokenizer, messages))
        if len(ids) > max_prompt_tokens:
            skipped += 1
            continue
        jobs += [Job(index, source, ids, t) for t in temperatures]
    return jobs, skipped


def answer_shard(generator: Generator, jobs: Sequence[Job], seed: int) -> list[dict[str, Any]]:
    """Answer every job of a shard; rows keep the shard's job order."""
    rows: list[Optional[dict[str, Any]]] = [None] * len(jobs)
    for t in sorted({j.temperature for j in jobs}):
        idx = [i for i, j in enumerate(jobs) if j.temperature == t]
        answers = generator.generate([jobs[i].prompt_ids for i in idx], t, seed)
        for i, (response, finished) in zip(idx, answers):
            j = jobs[i]
            rows[i] = dict(
                prompt_index=j.prompt_index, source=j.source, temperature=j.temperature,
                prompt_ids=list(j.prompt_ids), response_ids=response, finished=finished,
            )
    return [r for r in rows if r is not None]


def eos_ids(tokenizer: Any, model_path: str) -> list[int]:
    """Stop tokens: the tokenizer's eos plus the generation config's."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        from transformers import GenerationConfig

        gen_eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
    except OSError:
        pass
    if not ids:
        raise ValueError(f"{model_path}: neither the tokenizer nor generation_config.json names an eos token")
    return sorted(int(i) for i in ids)


def cut_at_eos(ids: Sequence[int], stop: Sequence[int]) -> tuple[list[int], bool]:
    """Keep tokens up to and including the first stop token."""
    stop_set = set(stop)
    for i, t in enumerate(ids):
        if t in stop_set:
            return list(ids[: i + 1]), True
    return list(ids), False


class HFGenerator:
    """Batched HF ``generate`` with left padding; pure sampling (no top-k/top-p) when ``temperature > 0``."""

    def __init__(self, model_path: str, tokenizer: Any, *, device: str, dtype: torch.dtype, batch_size: int,
                 max_new_tokens: int) -> None:
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.stop = eos_ids(tokenizer, model_path)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop[0]

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], temperature: float, seed: int) -> list[tuple[list[int], bool]]:
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens, do_sample=temperature > 0, temperature=temperature or None,
            top_k=0 if temperature > 0 else None, top_p=1.0 if temperature > 0 else None,
            eos_token_id=self.stop, pad_token_id=self.pad_id,
        )
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths per batch
        results: list[tuple[list[int], bool]] = [([], False)] * len(prompts)
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start : start + self.batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.int64)
            attn = torch.zeros(len(idx), width, dtype=torch.int64)
            for row, i in enumerate(idx):
                ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                attn[row, width - len(prompts[i]) :] = 1
            torch.manual_seed(seed * 1_000 + b)
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=attn.to(self.device), generation_config=config
            )
            for row, i in enumerate(idx):
                results[i] = cut_at_eos(out[row, width:].tolist(), self.stop)
        return results


class SGLangGenerator:
    """SGLang offline ``Engine`` on token ids (``skip_tokenizer_init``); one ``generate`` call per shard."""

    def __init__(self, model_path: str, tokenizer: Any, *, dtype: str, seed: int, max_new_tokens: int,
                 mem_fraction_static: float, engine_args: dict[str, Any]) -> None:
        import sglang  # lazily: only this backend needs it

        self.stop = eos_ids(tokenizer, model_path)
        self.max_new_tokens = max_new_tokens
        kwargs = dict(model_path=model_path, skip_tokenizer_init=True, dtype=dtype, random_seed=seed,
                      mem_fraction_static=mem_fraction_static, log_level="error")
        kwargs.update(engine_args)
        self.engine = sglang.Engine(**kwargs)

    def generate(self, prompts: Sequence[Sequence[int]], temperature: float, seed: int) -> list[tuple[list[int], bool]]:
        params = dict(temperature=temperature, top_p=1.0, top_k=-1, max_new_tokens=self.max_new_tokens,
                      stop_token_ids=self.stop)
        outs = self.engine.generate(input_ids=[list(p) for p in prompts], sampling_params=params)
        results = []
        for o in outs:
            ids = list(o["output_ids"])
            reason = o.get("meta_info", {}).get("finish_reason") or {}
            matched = reason.get("matched") if isinstance(reason, dict) else None
            if isinstance(matched, int) and matched in self.stop and (not ids or ids[-1] != matched):
                ids.append(matched)  # keep the eos the draft must learn to predict
            results.append(cut_at_eos(ids, self.stop))
        return results

    def shutdown(self) -> None:
        self.engine.shutdown()


def make_generator(args: argparse.Namespace, tokenizer: Any) -> Generator:
    if args.backend == "sglang":
        return SGLangGenerator(
            args.target, tokenizer, dtype=args.dtype, seed=args.seed, max_new_tokens=args.max_new_tokens,
            mem_fraction_static=args.mem_fraction_static, engine_args=json.loads(args.engine_args),
        )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float32 if device == "cpu" else getattr(torch, args.dtype)
    return HFGenerator(args.target, tokenizer, device=device, dtype=dtype, batch_size=args.batch_size,
                       max_new_tokens=args.max_new_tokens)


def _jobs_digest(jobs: Sequence[Job], shard_size: int) -> str:
    h = hashlib.sha256(str(shard_size).encode())
    for j in jobs:
        h.update(f"{j.prompt_index}|{j.temperature}|{','.join(map(str, j.prompt_ids))}\n".encode())
    return h.hexdigest()


def start_manifest(out: Path, args: argparse.Namespace, tokenizer: Any, temperatures: Sequence[float],
                   jobs: Sequence[Job], skipped: int) -> dict[str, Any]:
    """Write (or check, when resuming) the manifest describing this job list."""
    digest = _jobs_digest(jobs, args.shard_size)
    path = out / MANIFEST_NAME
    if path.exists():
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("jobs_sha256") != digest:
            raise SystemExit(f"{out} holds data for a different job list (prompts, temperatures or shard size); "
                             "use a new --output or the same arguments as before")
        return old
    manifest = {
        "format": FORMAT,
        "target": str(args.target),
        "tokenizer": {"name_or_path": str(tokenizer.name_or_path), "class": type(tokenizer).__name__,
                      "vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
                      "chat_template_sha256": hashlib.sha256(str(tokenizer.chat_template).encode()).hexdigest()},
        "temperatures": list(temperatures),
        "max_new_tokens": args.max_new_tokens, "max_prompt_tokens": args.max_prompt_tokens,
        "backend": args.backend, "seed": args.seed, "shard_size": args.shard_size,
        "num_prompts": {"requested_dataset": args.num_prompts, "requested_math": args.math_problems,
                        "skipped_too_long": skipped, "used": len({j.prompt_index for j in jobs})},
        "num_responses": len(jobs), "jobs_sha256": digest, "versions": _versions(args.backend),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": False,
    }
    write_json_atomic(path, manifest)
    return manifest


def finish_manifest(out: Path, manifest: dict[str, Any], num_shards: int) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shards = []
    for i in range(num_shards):
        table = pq.read_table(out / shard_name(i), columns=["prompt_ids", "response_ids", "finished"])
        shards.append({
            "file": shard_name(i), "rows": table.num_rows,
            "prompt_tokens": int(pc.sum(pc.list_value_length(table["prompt_ids"])).as_py() or 0),
            "response_tokens": int(pc.sum(pc.list_value_length(table["response_ids"])).as_py() or 0),
            "finished": int(pc.sum(table["finished"].cast("int64")).as_py() or 0),
        })
    totals = {k: sum(s[k] for s in shards) for k in ("rows", "prompt_tokens", "response_tokens", "finished")}
    manifest.update(shards=shards, totals=totals, complete=True, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_json_atomic(out / MANIFEST_NAME, manifest)


def _versions(backend: str) -> dict[str, str]:
    from importlib import metadata

    from .. import __version__

    names = ["torch", "transformers", "pyarrow"] + (["sglang"] if backend == "sglang" else [])
    versions = {"jetspec-sglang": __version__}
    for n in names:
        try:
            versions[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            versions[n] = "not installed"
    return versions
