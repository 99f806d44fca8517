"""An SGLang HTTP server in a child process, for tests and benchmarks.

The server runs in its own process session so that stopping it also stops the
scheduler and detokenizer processes it spawned.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Optional, Sequence


# JETSPEC variants: configuration prefix -> the environment that selects it.
JETSPEC_VARIANTS = {
    "jetspec": {},  # overlap-scheduled, the default
    "jetspec-no-overlap": {"JETSPEC_OVERLAP": "0"},  # without overlap scheduling
    "jetspec-tree": {"JETSPEC_VERIFY_ATTENTION": "tree"},  # verify attention from our tree kernel
    "jetspec-sglang-attention": {"JETSPEC_VERIFY_ATTENTION": "sglang"},  # SGLang's (the default takes ours on triton)
    "jetspec-sglang-inputs": {"JETSPEC_VERIFY_INPUTS": "sglang"},  # verify inputs from SGLang's tree kernel
    "jetspec-sglang-accept": {"JETSPEC_GREEDY_ACCEPT": "0"},  # greedy acceptance by SGLang's run_eagle_verify
    "jetspec-fixed": {"JETSPEC_VERIFY_TOKENS": "0"},  # the full budget at every batch size
    "jetspec-cap256": {"JETSPEC_VERIFY_TOKENS": "256"},  # budgets halved until bs * budget <= 256 tokens
    "jetspec-replay-metadata": {"JETSPEC_GRAPH_METADATA": "0"},  # SGLang's attention metadata refill before replays
    "jetspec-torch-draft-inputs": {"JETSPEC_DRAFT_INPUTS": "torch"},  # the head's block inputs by six torch ops
    "jetspec-sglang-verify-prep": {"JETSPEC_DIRECT_VERIFY": "0"},  # greedy verify through SGLang's preparation and runner
    "jetspec-torch-topk": {"JETSPEC_VOCAB_TOPK": "torch"},  # the head's vocabulary top-K by PyTorch's ops
    "jetspec-sglang-head": {"JETSPEC_HEAD_ATTENTION": "sglang"},  # the head's block attention by SGLang's kernel
    "jetspec-kernel-merge": {"JETSPEC_SPLIT_MERGE": "kernel"},  # tree attention's splits merged by a second launch
    "jetspec-fused-graph-inputs": {"JETSPEC_GRAPH_INPUTS": "fused"},  # a direct step's graph inputs in one launch each
    "jetspec-fused-accept": {"JETSPEC_ACCEPT_WALK": "fused"},  # graphed greedy acceptance's walk in one launch
    "jetspec-fused-context-kv": {"JETSPEC_CONTEXT_KV": "fused"},  # the head's context K/V by SGLang's stacked GEMM
    "jetspec-fused-all": {"JETSPEC_GRAPH_INPUTS": "fused", "JETSPEC_ACCEPT_WALK": "fused",
                          "JETSPEC_CONTEXT_KV": "fused"},  # the three opt-in fusions above together
}


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on ``127.0.0.1:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def close_servers_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, a job scheduler) into ``SystemExit`` in this process, so every open
    ``SGLangServer`` context closes its process group. By default SIGTERM ends Python at once and
    leaves the servers' schedulers running, busy on the host and holding their GPU memory."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def run_labels(configs: Sequence[str]) -> list[str]:
    """A label per configuration run: its name, or ``NAME #k`` for the k-th run of a repeated name. Repeating a
    configuration in one run (``plain jetspec:64 jetspec:128 jetspec:64``) shows how far the host drifted between
    servers, which moves a small model's step by tens of percent."""
    seen: dict[str, int] = {}
    labels = []
    for name in configs:
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return labels


def log_name(label: str) -> str:
    """A run label as a file-name part: ``jetspec:64 #2`` -> ``jetspec-64-2``."""
    return label.replace(" #", "-").replace(":", "-")


def config_name(label: str) -> str:
    """The configuration a run label runs: ``jetspec:64 #2`` -> ``jetspec:64``."""
    return label.partition(" #")[0]


TILE_VARIANT = "jetspec-tile-"  # jetspec-tile-64x128x4x2: the tree kernel launched with that tile (JETSPEC_TREE_TILE)


def variant_env(variant: str) -> Optional[dict[str, str]]:
    """The environment a JETSPEC variant name selects (``JETSPEC_VARIANTS``, or ``jetspec-tile-TILE``), None for a
    name that is not one."""
    if variant in JETSPEC_VARIANTS:
        return dict(JETSPEC_VARIANTS[variant])
    if variant.startswith(TILE_VARIANT) and len(variant) > len(TILE_VARIANT):
        return {"JETSPEC_TREE_TILE": variant[len(TILE_VARIANT) :]}
    return None


def algorithm_env(name: str) -> dict[str, str]:
    """Environment of one configuration or run label (its JETSPEC variant's; empty for the others)."""
    return variant_env(config_name(name).partition(":")[0]) or {}


def algorithm_args(name: str, head: str) -> list[str]:
    """Server flags of one configuration or run label: ``plain``, ``ngram``, ``dflash``, or ``VARIANT:BUDGET`` for a
    JETSPEC variant of ``JETSPEC_VARIANTS`` (``jetspec:64``, ``jetspec-no-overlap:128``, ``jetspec-tree:64``) or a
    tile variant (``jetspec-tile-64x128x4x2:64``)."""
    name = config_name(name)
    if name == "plain":
        return []
    if name == "ngram":
        return ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", "8"]
    if name == "dflash":
        return ["--speculative-algorithm", "DFLASH", "--speculative-draft-model-path", head]
    variant, _, budget = name.partition(":")
    if variant_env(variant) is not None and budget.isdigit():
        return ["--speculative-algorithm", "JETSPEC", "--speculative-draft-model-path", head,
                "--speculative-num-draft-tokens", budget]
    raise ValueError(f"unknown configuration {name!r}: use plain, ngram, dflash or VARIANT:BUDGET with VARIANT "
                     f"one of {sorted(JETSPEC_VARIANTS)} or {TILE_VARIANT}TILE (e.g. {TILE_VARIANT}64x128x4x2)")


class SGLangServer:
    """``python -m sglang.launch_server`` on ``127.0.0.1:port``; ready once ``/health_generate`` answers.

    Refuses a port already in use, and (with ``log_path``) a ready server that has added nothing to its log:
    in both cases the answers could come from another process.

    Examples:
        >>> with SGLangServer("MODEL", 30000, ["--attention-backend", "triton"]) as server:  # doctest: +SKIP
        ...     server.post("/generate", {"text": "Hi", "sampling_params": {"max_new_tokens": 8}})
    """

    def __init__(self, model: str, port: int, args: list[str], *, startup_timeout: float = 900,
                 log_path: Optional[str] = None, env: Optional[dict[str, str]] = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.started = time.perf_counter()
        if port_in_use(port):
            raise RuntimeError(f"port {port} is in use (a server still shutting down?); its answers would not be this "
                               "server's: pick another port")
        log = open(log_path, "ab") if log_path else None
        self._log_start = log.tell() if log else 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--host", "127.0.0.1",
             "--port", str(port), *args],
            start_new_session=True, stdout=log, stderr=subprocess.STDOUT if log else None,
            env=None if env is None else {**os.environ, **env},
        )
        try:
            self._wait_ready(startup_timeout)
        except BaseException:  # not ready, or SIGTERM (SystemExit) / Ctrl-C: no `with` block owns the server yet
            self.close()
            raise
        self.startup_seconds = time.perf_counter() - self.started

    def _wait_ready(self, timeout: float) -> None:
        import requests

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the SGLang server on {self.url} exited during startup (code {self.process.returncode})")
            try:
                if requests.get(f"{self.url}/health_generate", timeout=5).status_code == 200:
                    self._check_log_written()
                    return
            except requests.RequestException:
                pass
            time.sleep(2)
        raise TimeoutError(f"the SGLang server on {self.url} was not ready after {timeout:.0f} s")

    LOG_GRACE_SECONDS = 10.0  # how long a ready server may take to flush its first log lines

    def _check_log_written(self) -> None:
        """A server that answers but has added nothing to its log may not be the one this object started (a
        benchmark run on 2026-12-06 measured such a server; its rows could not be tied to their configuration)."""
        if not self.log_path:
            return
        deadline = time.time() + self.LOG_GRACE_SECONDS
        while os.path.getsize(self.log_path) <= self._log_start:
            if time.time() > deadline:
                raise RuntimeError(f"the server answering on {self.url} wrote nothing to {self.log_path} after "
                                   "reporting ready: another process may be answering there")
            time.sleep(0.5)

    def post(self, path: str, body: dict, timeout: float = 600) -> Any:
        import requests

        response = requests.post(f"{self.url}{path}", json=body, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def get(self, path: str, timeout: float = 60) -> Any:
        import requests

        response = requests.get(f"{self.url}{path}", timeout=timeout)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=60)

    def __enter__(self) -> "SGLangServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
