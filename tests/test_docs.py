"""The docs name only what the repository has.

Read are every page under ``docs/``, ``README.md`` and ``benchmarks/RESULTS.md``. Checked:

* every ``configs/<file>.py:<preset>`` names a file and one of its presets (found without
  importing, as ``jaxvlm run --help`` lists them); a bare ``:preset`` after such a reference on
  the same line names a preset of the same file;
* every ``jaxvlm ...`` and ``python ...`` command, in code blocks and in inline code: the
  subcommand and flags parse with the real parser; ``jaxvlm run`` and ``python experiments/X.py``
  load their config with the overrides (unknown keys and wrong types fail); a
  ``python benchmarks/X.py`` flag is one the script declares; ``python -m pytest`` paths exist;
* every ``--config.KEY`` mentioned in prose is a key of the config the page last named;
* relative links and inline repository paths resolve inside the repository (a clone with no
  folder beside it has every page); ``python`` code blocks compile;
* every seed page ``docs/seeds/0*.md`` has the template's headings, in order.

``test_checker_fails_on_a_renamed_preset`` runs the same checks on a copy of the repository whose
seed-001 ``tiny`` preset is renamed, and shows them failing.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import pathlib
import re
import shlex
import shutil

import ml_collections
import pytest

from jaxvlm import cli
from jaxvlm import run as run_lib
from jaxvlm.config import load_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOP = ("jaxvlm", "pallas_kernels", "configs", "experiments", "benchmarks", "tests", "docs",
       "notebooks")
SEED_HEADINGS = ["What the seed reports", "Config and experiment", "Tiny preset: current table",
                 "Real run", "Known differences from the original code"]
SHELL = ("", "bash", "sh", "shell", "console")
CONFIG_REF = re.compile(r"configs/([\w-]+\.py)(?::(\w+))?")
BARE_PRESET = re.compile(r"`:(\w+)`")
KEY_MENTION = re.compile(r"--config\.([A-Za-z_][\w.]*)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", flags=re.M | re.S)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")  # one line break allowed
REPO_PATH = re.compile(rf"^(?:{'|'.join(TOP)})/[\w./*-]*$")
PYTHON = re.compile(r"python(3(\.\d+)?)?$")
PLACEHOLDER = re.compile(r"<[\w ]+>")  # a template such as configs/<file>.py:<preset>


def pages(root: pathlib.Path) -> list[pathlib.Path]:
  return [p for p in [*sorted((root / "docs").rglob("*.md")), root / "README.md",
                      root / "benchmarks" / "RESULTS.md"] if p.exists()]


def anchors(text: str) -> set[str]:
  """GitHub's anchors of a page's headings (lower case, punctuation dropped, spaces to ``-``)."""
  _, prose = split_page(text)
  return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
          for h in re.findall(r"^#+ (.+)$", prose, flags=re.M)}


def split_page(text: str) -> tuple[list[tuple[str, str]], str]:
  """(language, body) of every fenced block, and the text outside them."""
  blocks = [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]
  return blocks, FENCE.sub("", text)


def shell_commands(line: str) -> list[list[str]]:
  """The simple commands of one shell line (split at ``&&``, ``;``, ``|``), env prefix dropped."""
  lex = shlex.shlex(line, posix=True, punctuation_chars=True)
  lex.whitespace_split = True
  try:
    tokens = list(lex)
  except ValueError:
    return []
  out, cur = [], []
  for tok in tokens + [";"]:
    if tok and set(tok) <= set(";&|()<>"):
      while cur and re.match(r"^[A-Z_][A-Z0-9_]*=", cur[0]):
        cur = cur[1:]
      if cur:
        out.append(cur)
      cur = []
    else:
      cur.append(tok)
  return out


def commands_of(text: str) -> list[list[str]]:
  """``jaxvlm`` / ``python`` commands of shell code blocks and inline code (templates with
  ``<placeholders>`` left out)."""
  blocks, prose = split_page(text)
  lines = [ln for lang, body in blocks if lang in SHELL
           for ln in body.replace("\\\n", " ").splitlines()]
  lines += [span.replace("\n", " ") for span in INLINE.findall(prose)]
  cmds = [c for ln in lines if not PLACEHOLDER.search(ln) for c in shell_commands(ln)]
  return [c for c in cmds if c[0].split("/")[-1] == "jaxvlm" or PYTHON.match(c[0].split("/")[-1])]


class Checker:
  """Collects problems of the pages of one repository root."""

  def __init__(self, root: pathlib.Path):
    self.root = root
    self.problems: list[str] = []
    self.counts = {"commands": 0, "config refs": 0, "links": 0}

  def add(self, where: str, msg: str) -> None:
    self.problems.append(f"{where}: {msg}")

  @functools.cache
  def presets(self, name: str) -> list[str] | None:
    path = self.root / "configs" / name
    return run_lib._presets(ast.parse(path.read_text())) if path.exists() else None

  @functools.cache
  def config(self, name: str, preset: str) -> ml_collections.ConfigDict | str:
    try:
      return load_config(f"{self.root / 'configs' / name}:{preset}")
    except Exception as e:  # noqa: BLE001 - reported, not raised
      return f"{type(e).__name__}: {e}"

  def check_ref(self, where: str, name: str, preset: str | None) -> None:
    self.counts["config refs"] += 1
    known = self.presets(name)
    if known is None:
      self.add(where, f"configs/{name} does not exist")
    elif preset and preset not in known:
      self.add(where, f"configs/{name}:{preset}: no such preset (it has {known})")

  def check_key(self, where: str, ref: tuple[str, str] | None, key: str) -> None:
    if any(part.isupper() for part in key.split(".")):
      return  # a placeholder such as --config.KEY=VALUE
    if ref is None:
      self.add(where, f"--config.{key} follows no configs/<file>.py reference")
      return
    cfg = self.config(*ref)
    if isinstance(cfg, str):
      return  # the reference itself is reported
    node = cfg
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        self.add(where, f"--config.{key}: no such key in configs/{ref[0]}:{ref[1]}")
        return
      node = node[part]

  def check_run(self, where: str, spec: str, extra: list[str]) -> None:
    bad = [a for a in extra if not a.startswith("--config.")]
    if bad:
      self.add(where, f"arguments {bad} are not --config.KEY=VALUE overrides")
    path, _, preset = spec.partition(":")
    name = pathlib.Path(path).name
    if not (self.root / path).exists() or pathlib.Path(path).parent.name != "configs":
      self.add(where, f"config {path} is not a file of configs/")
      return
    self.check_ref(where, name, preset or None)
    try:
      load_config(f"{self.root / path}:{preset}" if preset else str(self.root / path), extra)
    except Exception as e:  # noqa: BLE001
      self.add(where, f"{' '.join([spec, *extra])}: {type(e).__name__}: {e}")

  def check_jaxvlm(self, where: str, argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
      return
    if argv[0] not in cli.COMMANDS:
      self.add(where, f"jaxvlm has no subcommand {argv[0]!r}")
      return
    if "-h" in argv or "--help" in argv or (len(argv) == 1 and argv[0] != "run"):
      return  # help, or the subcommand named in prose
    try:
      args, extra = cli.build_parser(argv[0]).parse_known_args(argv)
    except SystemExit:
      self.add(where, f"jaxvlm {' '.join(argv)}: does not parse")
      return
    if argv[0] == "run":
      self.check_run(where, args.config, extra)
    elif extra:
      self.add(where, f"jaxvlm {' '.join(argv)}: unknown arguments {extra}")

  def check_python(self, where: str, argv: list[str]) -> None:
    if not argv:
      return
    if argv[0] == "-c":
      try:
        compile(argv[1], where, "exec")
      except (SyntaxError, IndexError) as e:
        self.add(where, f"python -c: {e}")
      return
    if argv[0] == "-m":
      module, rest = argv[1], argv[2:]
      if module == "pytest":
        for tok in rest:
          if not tok.startswith("-") and ("/" in tok or tok.endswith(".py")):
            if not (self.root / tok.split("::")[0]).exists():
              self.add(where, f"pytest path {tok} does not exist")
      elif importlib.util.find_spec(module.split(".")[0]) is None:
        self.add(where, f"python -m {module}: no such module")
      return
    script, rest = argv[0], argv[1:]
    path = self.root / script
    if pathlib.Path(script).is_absolute() or not path.is_file():
      self.add(where, f"python {script}: not a script of the repository")
      return
    source = path.read_text()
    entry = re.search(r"experiment_entrypoint\(\w+,\s*\"([^\"]+)\"\)", source)
    if entry:
      parser = argparse.ArgumentParser(add_help=False)
      run_lib.add_arguments(parser)
      args, extra = parser.parse_known_args(rest)
      self.check_run(where, args.config if "--config" in rest else entry.group(1), extra)
      return
    declared, open_ended = {"-h", "--help"}, False
    for node in ast.walk(ast.parse(source)):
      if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
        for a in node.args:
          if isinstance(a, ast.Constant) and isinstance(a.value, str):
            declared.add(a.value)
          else:
            open_ended = True
    for tok in rest:
      flag = tok.split("=")[0]
      if flag.startswith("--") and flag not in declared and not open_ended:
        self.add(where, f"python {script}: flag {flag} is not declared by the script")

  def check_page(self, page: pathlib.Path) -> None:
    text = page.read_text()
    rel = page.relative_to(self.root)
    blocks, prose = split_page(text)
    for lang, body in blocks:
      if lang == "python":
        try:
          compile(body, str(rel), "exec")
        except SyntaxError as e:
          self.add(str(rel), f"python block does not compile: {e}")
    ref = None
    for n, line in enumerate(text.splitlines(), 1):
      where = f"{rel}:{n}"
      for m in CONFIG_REF.finditer(line):
        self.check_ref(where, m.group(1), m.group(2))
        ref = (m.group(1), m.group(2) or self.presets(m.group(1)) and self.presets(m.group(1))[0])
      line_ref = CONFIG_REF.search(line)
      if line_ref:
        for m in BARE_PRESET.finditer(line[line_ref.end():]):
          self.check_ref(where, line_ref.group(1), m.group(1))
      for m in KEY_MENTION.finditer(line):
        if not re.search(r"\b(jaxvlm|python3?)\s", line):
          self.check_key(where, ref if ref and ref[1] else None, m.group(1))
      for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):  # links, not code showing one
        self.counts["links"] += 1
        if "://" in target or target.startswith("mailto:"):
          continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(self.root) or not dest.exists():
          self.add(where, f"link {target} does not resolve inside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
          self.add(where, f"link {target}: {dest.name} has no heading with that anchor")
      if "../shared" in line:
        self.add(where, "names ../shared, a folder outside the repository")
    for span in INLINE.findall(prose):
      path = re.sub(r":\w+$", "", span)
      if REPO_PATH.match(path) and not any(self.root.glob(path.rstrip("/"))):
        self.add(str(rel), f"path {span} does not exist")
    for argv in commands_of(text):
      self.counts["commands"] += 1
      where = f"{rel}: {' '.join(argv)[:80]}"
      if argv[0].split("/")[-1] == "jaxvlm":
        self.check_jaxvlm(where, argv[1:])
      else:
        self.check_python(where, argv[1:])
    if page.parent.name == "seeds" and re.match(r"\d{3}_", page.name):
      headings = re.findall(r"^## (.+)$", text, flags=re.M)
      if headings != SEED_HEADINGS:
        self.add(str(rel), f"headings {headings}, the template is {SEED_HEADINGS}")


def check(root: pathlib.Path) -> Checker:
  checker = Checker(root)
  for page in pages(root):
    checker.check_page(page)
  return checker


def assert_docs_honest(root: pathlib.Path) -> Checker:
  checker = check(root)
  assert not checker.problems, "\n".join(checker.problems)
  return checker


def test_docs_name_only_what_exists():
  checker = assert_docs_honest(ROOT)
  assert checker.counts["commands"] >= 30 and checker.counts["config refs"] >= 20
  assert checker.counts["links"] >= 10


def test_checker_fails_on_a_renamed_preset(tmp_path):
  copy = tmp_path / "clone"
  shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
      ".git", ".venv", "runs", "__pycache__", "*.egg-info", ".pytest_cache", ".whl",
      ".device_out"))
  config = copy / "configs" / "adaptive_keep_ratio.py"
  source = config.read_text()
  assert 'preset == "tiny"' in source
  config.write_text(source.replace('preset == "tiny"', 'preset == "small"'))
  with pytest.raises(AssertionError, match="adaptive_keep_ratio.py:tiny"):
    assert_docs_honest(copy)
  problems = check(copy).problems
  assert problems and all("adaptive_keep_ratio.py" in p for p in problems), problems


def test_seed_index_shows_the_template_links_every_page_and_readme_links_the_docs():
  index = (ROOT / "docs" / "seeds" / "README.md").read_text()
  for heading in SEED_HEADINGS:
    assert f"## {heading}" in index
  for page in sorted((ROOT / "docs" / "seeds").glob("[0-9][0-9][0-9]_*.md")):
    assert f"[{page.name[:3]}]({page.name})" in index, f"docs/seeds/README.md: link {page.name}"
  readme = (ROOT / "README.md").read_text()
  for page in ("docs/architecture.md", "docs/seeds/README.md", "docs/tpu_vm.md",
               "benchmarks/RESULTS.md"):
    assert f"]({page})" in readme, page


def test_results_has_one_section_per_benchmark_script():
  results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
  for script in sorted((ROOT / "benchmarks").glob("*.py")):
    if script.stem.startswith(("bench_", "check_")):
      assert f"benchmarks/{script.name}" in results, script.name
