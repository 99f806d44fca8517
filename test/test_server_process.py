"""Benchmark configurations -> SGLang server flags and environment, and the server wrapper's startup checks
(no SGLang server started)."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from jetspec_sglang import server_process
from jetspec_sglang.server_process import SGLangServer, algorithm_args, algorithm_env, log_name, run_labels


def test_jetspec_variants_share_flags_and_differ_in_environment() -> None:
    flags = ["--speculative-algorithm", "JETSPEC", "--speculative-draft-model-path", "HEAD",
             "--speculative-num-draft-tokens", "64"]  # fmt: skip
    assert algorithm_args("jetspec:64", "HEAD") == algorithm_args("jetspec-tree:64", "HEAD") == flags
    assert algorithm_env("jetspec:64") == {}
    assert algorithm_env("jetspec-no-overlap:64") == {"JETSPEC_OVERLAP": "0"}
    assert algorithm_env("jetspec-tree:64") == {"JETSPEC_VERIFY_ATTENTION": "tree"}
    assert algorithm_env("jetspec-sglang-inputs:64") == {"JETSPEC_VERIFY_INPUTS": "sglang"}
    assert algorithm_env("jetspec-sglang-accept:64") == {"JETSPEC_GREEDY_ACCEPT": "0"}
    assert algorithm_env("jetspec-torch-draft-inputs:64") == {"JETSPEC_DRAFT_INPUTS": "torch"}
    assert algorithm_env("jetspec-torch-topk:64") == {"JETSPEC_VOCAB_TOPK": "torch"}
    assert algorithm_env("jetspec-sglang-head:64") == {"JETSPEC_HEAD_ATTENTION": "sglang"}
    assert algorithm_env("jetspec-kernel-merge:64") == {"JETSPEC_SPLIT_MERGE": "kernel"}
    assert algorithm_env("jetspec-fused-graph-inputs:64") == {"JETSPEC_GRAPH_INPUTS": "fused"}
    assert algorithm_env("jetspec-fused-accept:64") == {"JETSPEC_ACCEPT_WALK": "fused"}
    assert algorithm_env("jetspec-fused-context-kv:64") == {"JETSPEC_CONTEXT_KV": "fused"}
    assert algorithm_env("jetspec-fused-all:64") == {"JETSPEC_GRAPH_INPUTS": "fused", "JETSPEC_ACCEPT_WALK": "fused",
                                                     "JETSPEC_CONTEXT_KV": "fused"}
    assert algorithm_env("jetspec-cap256:128") == {"JETSPEC_VERIFY_TOKENS": "256"}
    assert algorithm_env("jetspec-tile-64x128x4x2:64 #2") == {"JETSPEC_TREE_TILE": "64x128x4x2"}
    assert algorithm_args("jetspec-tile-64x128x4x2:64", "HEAD") == algorithm_args("jetspec:64", "HEAD")


def test_a_repeated_configuration_runs_again_under_its_own_label() -> None:
    """``plain jetspec:64 jetspec:128 jetspec:64``: the second ``jetspec:64`` server shows the host's drift."""
    labels = run_labels(["plain", "jetspec:64", "jetspec-no-overlap:128", "jetspec:64", "jetspec:64"])
    assert labels == ["plain", "jetspec:64", "jetspec-no-overlap:128", "jetspec:64 #2", "jetspec:64 #3"]
    assert algorithm_args("jetspec:64 #2", "HEAD") == algorithm_args("jetspec:64", "HEAD")
    assert algorithm_env("jetspec-no-overlap:128 #2") == {"JETSPEC_OVERLAP": "0"}
    assert algorithm_args("plain #2", "HEAD") == []
    assert [log_name(label) for label in labels[2:4]] == ["jetspec-no-overlap-128", "jetspec-64-2"]


def test_baselines() -> None:
    assert algorithm_args("plain", "HEAD") == [] and algorithm_env("plain") == {}
    assert algorithm_args("dflash", "HEAD") == ["--speculative-algorithm", "DFLASH", "--speculative-draft-model-path", "HEAD"]
    assert algorithm_args("ngram", "HEAD")[:2] == ["--speculative-algorithm", "NGRAM"]


@pytest.mark.parametrize("name", ["jetspec", "jetspec:", "jetspec:abc", "eagle:64", "jetspec-fast:64",
                                  "jetspec-tile-:64"])
def test_unknown_configurations_name_the_choices(name: str) -> None:
    with pytest.raises(ValueError, match="VARIANT:BUDGET"):
        algorithm_args(name, "HEAD")


def test_sigterm_closes_open_servers_instead_of_orphaning_them(tmp_path) -> None:
    """``timeout`` sends SIGTERM: the benchmark must still leave its ``with SGLangServer`` block, which kills
    the server's process group. Here a stand-in ``close`` writes a file, and a child process plays the script."""
    script = textwrap.dedent(f"""
        import os, signal, time
        from jetspec_sglang.server_process import close_servers_on_sigterm

        class Server:
            def __enter__(self): return self
            def __exit__(self, *exc): open({str(tmp_path / "closed")!r}, "w").close()

        close_servers_on_sigterm()
        with Server():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
    """)
    done = subprocess.run([sys.executable, "-c", script], timeout=60, env={**os.environ})
    assert done.returncode == 128 + signal.SIGTERM
    assert (tmp_path / "closed").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_port_in_use_is_refused_before_launching(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(server_process.subprocess, "Popen", lambda *a, **k: pytest.fail("launched on a busy port"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(RuntimeError, match=f"port {holder.getsockname()[1]} is in use"):
            SGLangServer("MODEL", holder.getsockname()[1], [], log_path=str(tmp_path / "server.log"))


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_server_that_answers_but_logs_nothing_is_refused(monkeypatch, tmp_path) -> None:
    """The launched process stays silent while something else answers on its port (it starts after the port
    check, as a leftover server might still answer): the wrapper must not hand that server out as its own."""
    pytest.importorskip("requests")
    port, others = free_port(), []
    silent = [sys.executable, "-c", "import time; time.sleep(60)"]
    popen = subprocess.Popen

    def launch(cmd, **kwargs):
        others.append(http.server.HTTPServer(("127.0.0.1", port), _Healthy))
        threading.Thread(target=others[0].serve_forever, daemon=True).start()
        return popen(silent, start_new_session=True, stdout=kwargs["stdout"], stderr=kwargs["stderr"])

    monkeypatch.setattr(server_process.subprocess, "Popen", launch)
    monkeypatch.setattr(SGLangServer, "LOG_GRACE_SECONDS", 1.0)
    try:
        with pytest.raises(RuntimeError, match="wrote nothing to"):
            SGLangServer("MODEL", port, [], log_path=str(tmp_path / "server.log"), startup_timeout=30)
    finally:
        for other in others:
            other.shutdown()


def test_a_server_interrupted_while_starting_is_killed(monkeypatch, tmp_path) -> None:
    """``timeout`` can fire while the server is still starting, before any ``with`` block owns it: the SystemExit
    of ``close_servers_on_sigterm`` must still kill it. (On 2026-12-06 a server orphaned that way kept answering on
    its port through two later benchmark runs, which measured it in place of the servers they had started.)"""
    launched = []
    popen = subprocess.Popen

    def launch(cmd, **kwargs):
        launched.append(popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True))
        return launched[-1]

    def interrupted(self, timeout):
        raise SystemExit(128 + signal.SIGTERM)

    monkeypatch.setattr(server_process.subprocess, "Popen", launch)
    monkeypatch.setattr(SGLangServer, "_wait_ready", interrupted)
    with pytest.raises(SystemExit):
        SGLangServer("MODEL", free_port(), [], log_path=str(tmp_path / "server.log"))
    assert launched[0].wait(timeout=10) == -signal.SIGKILL
