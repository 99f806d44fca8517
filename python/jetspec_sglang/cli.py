"""The ``jetspec`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``jetspec --help`` stays fast and needs neither sglang nor a GPU.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("jetspec_sglang.demo", "answer a chat prompt with JetSpec and plainly on a CPU; print both and the speeds"),
    "export-prompts": ("jetspec_sglang.train.prompt_export", "write training prompts to one file, for GPU machines without the data wheels"),
    "generate-data": ("jetspec_sglang.train.data_gen", "regenerate training responses with the target model"),
    "train": ("jetspec_sglang.train.trainer", "train a draft head by forward-KL distillation"),
    "eval-tau": ("jetspec_sglang.train.tau_eval", "measure accepted length of a head with the reference engine"),
    "fix-head": ("jetspec_sglang.fix_head", "rewrite a head's config.json so SGLang sees its causal flag"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="jetspec", description="JetSpec speculative decoding tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints usage or the unknown-command error
        parser.print_help()
        return 2
    module_name, help_text = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    command_parser = argparse.ArgumentParser(prog=f"jetspec {argv[0]}", description=help_text)
    module.add_arguments(command_parser)
    return int(module.run(command_parser.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
