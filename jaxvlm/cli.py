"""The ``jaxvlm`` command.

Subcommands are registered in ``COMMANDS`` as ``name -> (module, help)``; each module defines
``add_arguments(parser)`` and ``main(args) -> int``. Modules are imported only when their
subcommand runs, so ``jaxvlm --help`` is instant. Bad input (a :mod:`jaxvlm.errors` error or a
missing file) ends any subcommand with one line ``jaxvlm: error: ...`` on stderr and exit status
2; ``--debug`` (anywhere on the line) or ``JAXVLM_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable

from jaxvlm.errors import JaxVLMError

DEBUG_ENV = "JAXVLM_DEBUG"
USER_ERRORS = (JaxVLMError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
               PermissionError)

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("jaxvlm.run", "run an experiment from an ml-collections config "
                          "(default: configs/sft.py:tiny)"),
    "compare-checkpoints": ("jaxvlm.tools.compare_checkpoints",
                            "compare two checkpoints parameter by parameter"),
    "compare-indices": ("jaxvlm.tools.compare_indices",
                        "compare the ICD index selections of two runs"),
    "parity": ("jaxvlm.tools.parity", "check a local HF checkpoint against transformers"),
    "sgl": ("jaxvlm.methods.sgl.hybrid", "SGL tools: build-hybrid (InternVL2 vision + another "
                                          "LM), compare-stats (two runs' guide attention)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
  """The ``jaxvlm`` parser; only ``command``'s module is imported to add its arguments."""
  parser = argparse.ArgumentParser(prog="jaxvlm", description=__doc__.splitlines()[0])
  parser.add_argument("--debug", action="store_true",
                      help=f"show tracebacks of input errors (or set {DEBUG_ENV}=1)")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, (module, help_text) in COMMANDS.items():
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(_module=module)
    if name == command:
      importlib.import_module(module).add_arguments(p)
  return parser


def error_line(e: BaseException) -> str:
  """``jaxvlm: error: <message>`` on one line (OS errors: file name and reason)."""
  if isinstance(e, OSError) and e.filename is not None:
    msg = f"{e.filename}: {e.strerror or e}"
  else:
    msg = str(e) or type(e).__name__
  return "jaxvlm: error: " + " ".join(msg.split())


def guarded(fn: Callable[[], int], debug: bool = False) -> int:
  """Runs ``fn``; user errors become one stderr line and status 2 (unless ``debug``)."""
  debug = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
  try:
    return int(fn() or 0)
  except USER_ERRORS as e:
    if debug:
      raise
    print(error_line(e), file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv
  argv = [a for a in argv if a != "--debug"]
  return guarded(lambda: _dispatch(argv), debug)


def _dispatch(argv: list[str]) -> int:
  parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
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
