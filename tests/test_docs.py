"""docs/tpu_vm.md: every ``jaxvlm`` command in its code blocks parses, with real config keys."""

from __future__ import annotations

import pathlib
import re
import shlex

from jaxvlm import cli
from jaxvlm.config import load_config

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "tpu_vm.md"


def doc_commands() -> list[list[str]]:
  blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
  lines = [ln.split("#")[0].strip() for b in blocks for ln in b.splitlines()]
  return [shlex.split(ln)[1:] for ln in lines if ln.startswith("jaxvlm ")]


def test_every_doc_command_parses_against_parser_and_configs():
  commands = doc_commands()
  assert len(commands) >= 5 and {c[0] for c in commands} >= {"run", "parity"}
  for argv in commands:
    parser = cli.build_parser(argv[0])
    args, extra = parser.parse_known_args(argv)
    if argv[0] == "run":
      cfg = load_config(args.config, extra)  # unknown keys / wrong types raise ConfigError
      assert cfg.experiment
    else:
      assert not extra, argv


def test_readme_links_the_guide():
  readme = (DOC.parent.parent / "README.md").read_text()
  assert "docs/tpu_vm.md" in readme
