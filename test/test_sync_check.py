"""The opt-in host-sync counter of JETSPEC decode steps (``JETSPEC_SYNC_CHECK``), on a CPU.

PyTorch reports a synchronizing CUDA call in sync debug mode "warn" as a warning; here the
step body raises such warnings itself, so the counting, the warm-up and the mode switching
are checked without a GPU (the GPU test runs a real engine with it)."""

from __future__ import annotations

import warnings

import pytest

from jetspec_sglang.sglang.sync_check import LOG_PREFIX, SyncCounter

SYNC = "called a synchronizing CUDA operation"


def make_counter(warmup: int) -> tuple[SyncCounter, list[str], list[str]]:
    lines: list[str] = []
    modes: list[str] = []
    return SyncCounter(warmup, log=lines.append, set_mode=modes.append), lines, modes


@pytest.mark.filterwarnings("ignore:called a synchronizing")  # the warm-up steps' own, passed through
def test_counts_syncs_only_after_the_warmup() -> None:
    counter, lines, modes = make_counter(warmup=2)
    for syncs in (3, 3, 0, 2, 0):
        with counter.step():
            for _ in range(syncs):
                warnings.warn(SYNC)
    assert (counter.checked_steps, counter.syncs) == (3, 2)
    assert modes == ["warn", "default"] * 3
    assert lines[-1].startswith(f"{LOG_PREFIX}: 2 in 2 steady-state decode steps (2 in the last at test_sync_check.py:")
    assert lines[0] == f"{LOG_PREFIX}: 0 in 1 steady-state decode steps (0 in the last)"


def test_other_warnings_pass_through_and_the_mode_is_restored_on_error() -> None:
    counter, _, modes = make_counter(warmup=0)
    with pytest.warns(DeprecationWarning, match="not a sync"):
        with counter.step():
            warnings.warn("not a sync", DeprecationWarning)
    with pytest.raises(RuntimeError):
        with counter.step():
            raise RuntimeError("step failed")
    assert modes[-1] == "default" and counter.syncs == 0


def test_env_switch(monkeypatch) -> None:
    monkeypatch.delenv("JETSPEC_SYNC_CHECK", raising=False)
    assert SyncCounter.from_env() is None
    monkeypatch.setenv("JETSPEC_SYNC_CHECK", "8")
    assert SyncCounter.from_env().warmup == 8
    monkeypatch.setenv("JETSPEC_SYNC_CHECK", "-1")
    with pytest.raises(ValueError, match=">= 0"):
        SyncCounter.from_env()


def _function_in(path: str, source: str, name: str, **env):
    """A function whose frames carry ``path`` as their file name, as if it lived in that package."""
    scope = dict(env, warnings=warnings)
    exec(compile(source, path, "exec"), scope)
    return scope[name]


def test_a_sync_names_the_sglang_caller_of_torch() -> None:
    """A sync inside ``torch.cuda.synchronize`` is reported with the SGLang frame that called it."""
    synchronize = _function_in("/venv/lib/site-packages/torch/cuda/__init__.py",
                               f"def synchronize():\n    warnings.warn({SYNC!r})\n", "synchronize")
    capture = _function_in("/venv/lib/site-packages/sglang/srt/fake_runner.py",
                           "\n\ndef capture():\n    synchronize()\n", "capture", synchronize=synchronize)
    counter, lines, _ = make_counter(warmup=0)
    with counter.step():
        capture()
    assert lines[-1].endswith("(1 in the last at torch/cuda/__init__.py:2 via sglang/srt/fake_runner.py:4 (capture))")


def test_torch_prototype_notice_is_not_a_sync() -> None:
    """torch warns once per process when sync debug mode is first set; that notice names synchronizing
    operations but is none (it made every first checked step of a GPU server count one sync)."""
    counter, lines, _ = make_counter(warmup=0)
    notice = ("Synchronization debug mode is a prototype feature and does not yet detect all "
              "synchronizing operations")
    with pytest.warns(UserWarning, match="prototype feature"):
        with counter.step():
            warnings.warn(notice)
    assert counter.syncs == 0 and lines[-1].endswith("(0 in the last)")
