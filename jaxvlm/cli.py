"""The ``jaxvlm`` command.

Subcommands are registered in ``COMMANDS`` as ``name -> (module, help)``; each module defines
``add_arguments(parser)`` and ``main(args) -> int``. Modules are imported only when their
subcommand runs, so ``jaxvlm --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("jaxvlm.run", "run an experiment from an ml-collections config "
                          "(default: configs/sft.py:tiny)"),
    "compare-checkpoints": ("jaxvlm.tools.compare_checkpoints",
                            "compare two checkpoints parameter by parameter"),
    "compare-indices": ("jaxvlm.tools.compare_indices",
                        "compare the ICD index selections of two runs"),
    "parity": ("jaxvlm.tools.parity", "check a local HF checkpoint against transformers"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
  """The ``jaxvlm`` parser; only ``command``'s module is imported to add its arguments."""
  parser = argparse.ArgumentParser(prog="jaxvlm", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, (module, help_text) in COMMANDS.items():
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(_module=module)
    if name == command:
      importlib.import_module(module).add_arguments(p)
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  parser = build_parser(argv[0] if argv else None)
  args, unknown = parser.parse_known_args(argv)
  if args.command is None:
    parser.print_help()
    return 0
  module = importlib.import_module(args._module)
  if unknown and not getattr(module, "ACCEPTS_EXTRA_ARGS", False):
    parser.error(f"unrecognised arguments: {' '.join(unknown)}")
  args.extra = unknown
  return int(module.main(args) or 0)


if __name__ == "__main__":
  sys.exit(main())
