"""Every package imports first in a fresh interpreter (no import cycle depends on import order)."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _packages() -> list[str]:
  return sorted(".".join(p.parent.relative_to(ROOT).parts)
                for p in (ROOT / "jaxvlm").rglob("__init__.py"))


def test_every_package_imports_first():
  procs = {name: subprocess.Popen([sys.executable, "-c", f"import {name}"], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for name in _packages()}
  failed = {name: p.communicate(timeout=300)[0].strip().splitlines()[-1:]
            for name, p in procs.items() if p.wait(timeout=300) != 0}
  assert len(procs) > 20 and not failed, failed
