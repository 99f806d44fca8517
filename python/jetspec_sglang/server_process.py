"""An SGLang HTTP server in a child process, for tests and benchmarks.

The server runs in its own process session so that stopping it also stops the
scheduler and detokenizer processes it spawned.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Optional


# JETSPEC variants: configuration prefix -> the environment that selects it.
JETSPEC_VARIANTS = {
    "jetspec": {},  # overlap-scheduled, the default
    "jetspec-no-overlap": {"JETSPEC_OVERLAP": "0"},  # without overlap scheduling
    "jetspec-tree": {"JETSPEC_VERIFY_ATTENTION": "tree"},  # verify attention from our tree kernel
    "jetspec-sglang-attention": {"JETSPEC_VERIFY_ATTENTION": "sglang"},  # SGLang's (the default takes ours on triton)
    "jetspec-sglang-inputs": {"JETSPEC_VERIFY_INPUTS": "sglang"},  # verify inputs from SGLang's tree kernel
    "jetspec-sglang-accept": {"JETSPEC_GREEDY_ACCEPT": "0"},  # greedy acceptance by SGLang's run_eagle_verify
    "jetspec-fixed": {"JETSPEC_VERIFY_TOKENS": "0"},  # the full budget at every batch size
    "jetspec-replay-metadata": {"JETSPEC_GRAPH_METADATA": "0"},  # SGLang's attention metadata refill before replays
    "jetspec-torch-draft-inputs": {"JETSPEC_DRAFT_INPUTS": "torch"},  # the head's block inputs by six torch ops
}


def close_servers_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, a job scheduler) into ``SystemExit`` in this process, so every open
    ``SGLangServer`` context closes its process group. By default SIGTERM ends Python at once and
    leaves the servers' schedulers running, busy on the host and holding their GPU memory."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def algorithm_env(name: str) -> dict[str, str]:
    """Environment of one configuration (``JETSPEC_VARIANTS``; empty for the others)."""
    return dict(JETSPEC_VARIANTS.get(name.split(":")[0], {}))


def algorithm_args(name: str, head: str) -> list[str]:
    """Server flags of one configuration: ``plain``, ``ngram``, ``dflash``, or ``VARIANT:BUDGET`` for a
    JETSPEC variant of ``JETSPEC_VARIANTS`` (``jetspec:64``, ``jetspec-no-overlap:128``, ``jetspec-tree:64``)."""
    if name == "plain":
        return []
    if name == "ngram":
        return ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", "8"]
    if name == "dflash":
        return ["--speculative-algorithm", "DFLASH", "--speculative-draft-model-path", head]
    variant, _, budget = name.partition(":")
    if variant in JETSPEC_VARIANTS and budget.isdigit():
        return ["--speculative-algorithm", "JETSPEC", "--speculative-draft-model-path", head,
                "--speculative-num-draft-tokens", budget]
    raise ValueError(f"unknown configuration {name!r}: use plain, ngram, dflash or VARIANT:BUDGET with VARIANT "
                     f"one of {sorted(JETSPEC_VARIANTS)}")


class SGLangServer:
    """``python -m sglang.launch_server`` on ``127.0.0.1:port``; ready once ``/health_generate`` answers.

    Examples:
        >>> with SGLangServer("MODEL", 30000, ["--attention-backend", "triton"]) as server:  # doctest: +SKIP
        ...     server.post("/generate", {"text": "Hi", "sampling_params": {"max_new_tokens": 8}})
    """

    def __init__(self, model: str, port: int, args: list[str], *, startup_timeout: float = 900,
                 log_path: Optional[str] = None, env: Optional[dict[str, str]] = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.started = time.perf_counter()
        log = open(log_path, "ab") if log_path else None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--host", "127.0.0.1",
             "--port", str(port), *args],
            start_new_session=True, stdout=log, stderr=subprocess.STDOUT if log else None,
            env=None if env is None else {**os.environ, **env},
        )
        self._wait_ready(startup_timeout)
        self.startup_seconds = time.perf_counter() - self.started

    def _wait_ready(self, timeout: float) -> None:
        import requests

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the SGLang server on {self.url} exited during startup (code {self.process.returncode})")
            try:
                if requests.get(f"{self.url}/health_generate", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(2)
        self.close()
        raise TimeoutError(f"the SGLang server on {self.url} was not ready after {timeout:.0f} s")

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
