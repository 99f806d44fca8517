"""Where the kernel benchmarks beside this file write their rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def save_rows(out: Path, meta: dict, rows: list[dict], markdown: Callable[[dict, list[dict]], str]) -> None:
    """Print the newest row and (re)write ``out``.json and ``out``.md with every row so far: called after each
    row, so a run cut short keeps what it measured."""
    print(json.dumps(rows[-1]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(markdown(meta, rows))
