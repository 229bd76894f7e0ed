"""Multi-GPU training and sharded loading of a LLaMA-3.2-1B-shaped model: equal to one device?

(a) Train (full fine-tune and LoRA r 128, alpha 32, dropout 0.1 on q,k,v,o; bf16 compute, float32
master weights, AdamW as in ``bench_training``; seq 2048), each setting one ``Trainer``:
``1 device, global batch`` (the reference: N x the per-GPU batch on one device), ``1 device,
per-GPU batch`` (the scaling anchor; the reference itself when N = 1) and meshes ``fsdp=N`` and
``data=N`` with the global batch. The first step on each mesh is compared with the reference on
the same batch from the same init: loss, grad norm and every updated parameter. AdamW's first
update is ``lr * g / (|g| + eps)``, about ``lr * sign(g)``, so a parameter differs by ~2 lr exactly
where a gradient element changed sign; the check counts those (``flips``: |diff| > lr / 2) and,
in float32, also requires max |diff| <= 1e-6. tokens/s per GPU = global batch x seq / median step
/ N; efficiency = tokens/s per GPU / tokens/s of the anchor.
(b) Load: ``save_pretrained`` writes random bf16 weights as safetensors shards + index; a fresh
process loads them with ``load_pretrained(mesh=fsdp=N)`` and then onto one device, measuring host
memory from ``/proc/self/status`` (peak RSS delta, ``VmHWM`` reset through ``clear_refs``; it
counts the memory-mapped shard pages, i.e. page cache), the peak of anonymous RSS sampled every
ms (private copies: a full host copy would show here) and the tracemalloc peak (numpy buffers).
Then greedy ``generate`` on the mesh vs one device: equal tokens, or a first mismatch where the
single-device top-2 logit gap is within rounding (a near-tie, reported).

Training (both modes, then the checkpoint write) runs in one subprocess, the load in a fresh one
(its host peak); this process imports no jax. ``--tiny``: a tiny LLaMA (same structure and
RoPE scaling), seq 64, float32 compute, on CPU with 8 simulated devices, XLA's CPU backend at
optimisation level 0 (compile time; the tiny run checks equality, its timings mean nothing); CI
runs it. NCCL is left at its defaults.

  PYTHONPATH=. python benchmarks/bench_multi_gpu.py --out DIR [--batch 4] [--devices N]
      [--parts full,lora,load]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from benchmarks.bench_training import LLAMA_1B, LORA, OPT, TARGETS

TINY = dict(LLAMA_1B, vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16)
TINY_LORA = dict(rank=8, alpha=16.0, dropout=0.1)
DEFAULTS = dict(seq=2048, batch=4, steps=10, warmup=3, compute_dtype="bfloat16",
                attention="cudnn", prompt=128, new_tokens=32)
TINY_DEFAULTS = dict(seq=64, batch=1, steps=2, warmup=1, compute_dtype="float32",
                     attention="xla", prompt=16, new_tokens=8)
SCALING_TARGETS = {"full": ("fsdp", 0.8), "lora": ("data", 0.9)}  # issue 16
# Per compute dtype: loss and grad-norm relative diffs, max |param diff| (None: not checked),
# fraction of sign flips, top-2 logit gap that counts as a near-tie in generation.
TOLERANCES = {"float32": dict(loss=1e-5, grad_norm=1e-4, params=1e-6, flips=0.0, tie=1e-4),
              "bfloat16": dict(loss=2e-3, grad_norm=2e-2, params=None, flips=1e-2, tie=6e-2)}


def model_config(args) -> dict:
  return TINY if args.tiny else LLAMA_1B


# ----------------------------------------------------------------------------- workers (jax)


def _meshes(n: int):
  import jax
  from jaxvlm.sharding import make_mesh
  devices = jax.devices()[:n]
  return {f"fsdp={n}": make_mesh({"data": 1, "fsdp": n, "tensor": 1}, devices),
          f"data={n}": make_mesh({"data": n, "fsdp": 1, "tensor": 1}, devices)}


def _peak_gib(n: int) -> float:
  import jax
  stats = [d.memory_stats() or {} for d in jax.devices()[:n]]
  return max(s.get("peak_bytes_in_use", 0) for s in stats) / 2**30


def _device0_bytes(tree) -> int:
  """Bytes of ``tree``'s arrays held by the first device (sharded: a slice each)."""
  import jax
  dev0 = jax.devices()[0]
  return int(sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards
                 if s.device == dev0))


def _host_params(state) -> dict:
  import jax
  import numpy as np
  return {jax.tree_util.keystr(p): np.asarray(jax.device_get(x))
          for p, x in jax.tree_util.tree_leaves_with_path(state)}


def _compare(ref: dict, metrics: dict, state, args) -> dict:
  """First-step loss, grad norm and updated parameters of a run against the reference."""
  import numpy as np
  tol = TOLERANCES[args.compute_dtype]
  loss, gnorm = float(metrics["loss"]), float(metrics["grad_norm"])
  max_diff, flips, count = 0.0, 0, 0
  for name, x in _host_params(state).items():
    diff = np.abs(x - ref["params"][name])
    max_diff = max(max_diff, float(diff.max()))
    flips += int(np.sum(diff > OPT["lr"] / 2))
    count += diff.size
  out = dict(loss=loss, loss_rel_diff=abs(loss - ref["loss"]) / abs(ref["loss"]),
             grad_norm_rel_diff=abs(gnorm - ref["grad_norm"]) / ref["grad_norm"],
             params_max_abs_diff=max_diff, flip_fraction=flips / count)
  out["passed"] = bool(out["loss_rel_diff"] <= tol["loss"]
                       and out["grad_norm_rel_diff"] <= tol["grad_norm"]
                       and out["flip_fraction"] <= tol["flips"]
                       and (tol["params"] is None or max_diff <= tol["params"]))
  return out


def train_worker(mode: str, args) -> dict:
  """Every training setting of one mode (full / lora) in this process, one trainer at a time."""
  import itertools

  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from jaxvlm import models
  from jaxvlm.layers import lora
  from jaxvlm.sharding import LOGICAL_RULES_FSDP, shard_state
  from jaxvlm.training import TrainConfig, Trainer, causal_lm_loss
  from benchmarks.timing import median_seconds
  n, cfg = args.devices or len(jax.devices()), model_config(args)
  global_batch = n * args.batch
  rng = np.random.default_rng(0)
  batches = [{"input_ids": rng.integers(0, cfg["vocab_size"], (global_batch, args.seq), np.int32)}
             for _ in range(4)]

  graphdef, init = nnx.split(models.from_config(
      cfg, seed=0, dtype=args.compute_dtype, param_dtype="float32", attention_impl=args.attention))
  init = jax.device_get(init)  # on the host: every trainer starts from a fresh copy of it

  def trainer(mesh):
    # uncommitted on one device: committed params make the Trainer compile its step twice
    model = nnx.merge(graphdef, jax.tree.map(jnp.asarray, init) if mesh is None
                      else shard_state(init, mesh, LOGICAL_RULES_FSDP))
    trainable = nnx.Param
    if mode == "lora":
      lora.apply_lora(model, TARGETS, seed=0, **(TINY_LORA if args.tiny else LORA))
      trainable = nnx.LoRAParam
    return Trainer(model, dict(OPT, schedule="constant"), causal_lm_loss,
                   lambda seed, start: iter(()), mesh,
                   config=TrainConfig(steps=10**6, progress=False), trainable=trainable)

  def run(name, mesh, batch: int, ref=None):
    """Times one setting; compares its first step with ``ref`` or returns it as the reference."""
    tr = trainer(mesh)
    data = [{k: v[:batch] for k, v in b.items()} for b in batches]
    t0 = time.perf_counter()
    metrics = tr.train_step(data[0])
    loss = float(metrics["loss"])
    row = dict(mode=mode, setting=name, devices=1 if mesh is None else mesh.size,
               global_batch=batch, loss=loss, compile_s=time.perf_counter() - t0,
               device0_param_bytes=_device0_bytes((tr.params, tr.frozen)))
    if ref is not None:
      row["check"] = _compare(ref, metrics, tr.params, args)
    first = None
    if ref is None and batch == global_batch:
      first = dict(loss=loss, grad_norm=float(metrics["grad_norm"]),
                   params=_host_params(tr.params))
    step = itertools.count(1)
    row["step_s"] = median_seconds(lambda: tr.train_step(data[next(step) % 4])["loss"],
                                   warmup=args.warmup - 1, iters=args.steps, sync=float)
    row["tokens_per_s"] = batch * args.seq / row["step_s"]
    row["tokens_per_s_per_gpu"] = row["tokens_per_s"] / row["devices"]
    row["peak_gib_so_far"] = _peak_gib(n)  # of the process: exact for its first run only
    del tr
    gc.collect()
    return row, first

  ref_row, ref = run("1 device, global batch", None, global_batch)
  anchor = run("1 device, per-GPU batch", None, args.batch)[0] if n > 1 else ref_row
  rows = [ref_row] + ([anchor] if n > 1 else [])
  rows += [run(name, mesh, global_batch, ref)[0] for name, mesh in _meshes(n).items()]
  for r in rows:
    r["efficiency"] = r["tokens_per_s_per_gpu"] / anchor["tokens_per_s"]
  return dict(rows=rows, n_params=int(sum(x.size for x in ref["params"].values())))


def write_worker(args, folder: str) -> dict:
  """Random bf16 weights written as HF safetensors shards (about 4) with an index."""
  import jax
  from flax import nnx
  from jaxvlm import models
  model = models.from_config(model_config(args), seed=1, dtype="bfloat16", param_dtype="bfloat16")
  nbytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  models.save_pretrained(model, folder, dtype="bfloat16", max_shard_bytes=nbytes // 4 + 1)
  shards = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
  return dict(checkpoint_bytes=int(nbytes), shards=len(shards))


def _status() -> dict:
  with open("/proc/self/status") as f:
    return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)
            if k in ("VmRSS", "VmHWM", "RssAnon")}


class _AnonPeak(threading.Thread):
  """Samples ``RssAnon`` every millisecond until stopped; ``peak`` is the largest value seen."""

  def __init__(self):
    super().__init__(daemon=True)
    self.peak, self.running = _status()["RssAnon"], True

  def run(self):
    while self.running:
      self.peak = max(self.peak, _status()["RssAnon"])
      time.sleep(1e-3)


def measured_load(folder: str, mesh, dtype: str) -> tuple[object, dict]:
  """``load_pretrained`` with host-memory measurements (see the module docstring)."""
  import tracemalloc

  import jax
  from flax import nnx
  from jaxvlm.models import load_pretrained
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")  # resets VmHWM to the current RSS
    hwm_reset = True
  except OSError:
    hwm_reset = False
  before = _status()
  sampler = _AnonPeak()
  sampler.start()
  tracemalloc.start()
  t0 = time.perf_counter()
  model = load_pretrained(folder, dtype=dtype, mesh=mesh)
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  jax.block_until_ready(params)
  load_s = time.perf_counter() - t0
  numpy_peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  sampler.running = False
  sampler.join()
  after = _status()
  return model, dict(
      load_s=load_s, devices=1 if mesh is None else mesh.size,
      param_bytes=int(sum(x.nbytes for x in params)), device0_param_bytes=_device0_bytes(params),
      largest_tensor_bytes=int(max(x.nbytes for x in params)),
      host_peak_rss_delta_bytes=after["VmHWM"] - before["VmRSS"] if hwm_reset else None,
      host_peak_anon_delta_bytes=sampler.peak - before["RssAnon"],
      host_anon_after_delta_bytes=after["RssAnon"] - before["RssAnon"],
      numpy_peak_bytes=int(numpy_peak))


def load_worker(args, folder: str) -> dict:
  import jax
  import numpy as np
  from jaxvlm.generation import generate
  from jaxvlm.sharding import use_mesh_rules
  n = args.devices or len(jax.devices())
  for d in jax.devices()[:n]:  # backend and device contexts up before the baseline
    jax.block_until_ready(jax.device_put(np.zeros(8, np.float32), d))
  mesh = _meshes(n)[f"fsdp={n}"]
  sharded, sharded_mem = measured_load(folder, mesh, args.load_dtype)
  single, single_mem = measured_load(folder, None, args.load_dtype)
  vocab = sharded.config.vocab_size
  prompt = np.random.default_rng(2).integers(0, vocab, (2 * n, args.prompt), np.int32)
  gen = dict(batch=2 * n, prompt_len=args.prompt, new_tokens=args.new_tokens)
  kw = dict(max_new_tokens=args.new_tokens, temperature=0.0, eos_token_id=())
  with use_mesh_rules(mesh):
    ours = np.asarray(generate(sharded, prompt, **kw).new_tokens)
  ref = np.asarray(generate(single, prompt, **kw).new_tokens)
  gen["matching_tokens"], gen["total_tokens"] = int(np.sum(ours == ref)), int(ref.size)
  gen["tokens_equal"] = bool(np.array_equal(ours, ref))
  gen["passed"] = gen["tokens_equal"]
  if not gen["tokens_equal"]:  # first mismatch: is it a near-tie on one device?
    row, pos = min(zip(*np.nonzero(ours != ref)), key=lambda rp: (rp[1], rp[0]))
    ids = np.concatenate([prompt[row], ref[row, :pos]])[None]
    top2 = np.sort(np.asarray(single(ids).logits[0, -1], np.float32))[-2:]
    gap = float(top2[1] - top2[0])
    gen["first_mismatch"] = dict(row=int(row), position=int(pos), top2_gap=gap)
    gen["passed"] = gap <= TOLERANCES[args.load_dtype]["tie"]
  return dict(sharded=sharded_mem, single=single_mem, generate=gen, mesh=f"fsdp={n}",
              load_dtype=args.load_dtype)


def environment(args) -> dict:
  import flax
  import jax
  import optax
  devices = jax.devices()[:args.devices or len(jax.devices())]
  return dict(device=devices[0].device_kind, platform=devices[0].platform, devices=len(devices),
              jax=jax.__version__, flax=flax.__version__, optax=optax.__version__,
              python=platform.python_version())


# ----------------------------------------------------------------------------- driver


def _run_worker(kind: str, argv: list[str], env: dict) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", kind]
  proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
  lines = proc.stdout.strip().splitlines()
  if proc.returncode != 0 or not lines:
    return {"error": f"worker {kind} exited with {proc.returncode}"}
  return json.loads(lines[-1])


def child_env(tiny: bool) -> dict:
  env = dict(os.environ)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
  if tiny:
    env["JAX_PLATFORMS"] = "cpu"
    flags = env.get("XLA_FLAGS", "")
    for flag in ("--xla_force_host_platform_device_count=8",  # CPU compile time halves:
                 "--xla_backend_optimization_level=0"):  # the tiny path checks, not times
      if flag.split("=")[0] not in flags:
        flags += " " + flag
    env["XLA_FLAGS"] = flags.strip()
  return env


def _fmt_bytes(x) -> str:
  if x is None:
    return "n/a"
  scale, unit = next((s, u) for s, u in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B"))
                     if abs(x) >= s / 4 or u == "B")
  return f"{x / scale:.2f} {unit}"


def _train_lines(result: dict) -> list[str]:
  lines = ["| mode | setting | devices | batch | params on device 0 | step (ms) | tokens/s | "
           "tokens/s per GPU | efficiency | loss rel diff | grad-norm rel diff | params max abs "
           "diff | flips | equal |", "|" + "---|" * 14]
  notes = []
  for mode, out in result["train"].items():
    if "error" in out:
      lines.append(f"| {mode} | error: {out['error']} |" + " |" * 12)
      continue
    for r in out["rows"]:
      c = r.get("check")
      checks = (f"{c['loss_rel_diff']:.1e} | {c['grad_norm_rel_diff']:.1e} | "
                f"{c['params_max_abs_diff']:.1e} | {c['flip_fraction']:.1e} | "
                f"{'yes' if c['passed'] else '**NO**'}") if c else "reference | | | |"
      lines.append(f"| {r['mode']} | {r['setting']} | {r['devices']} | {r['global_batch']} | "
                   f"{_fmt_bytes(r['device0_param_bytes'])} | {1e3 * r['step_s']:.1f} | "
                   f"{r['tokens_per_s']:,.0f} | "
                   f"{r['tokens_per_s_per_gpu']:,.0f} | {100 * r['efficiency']:.1f}% | {checks} |")
    ref, n = out["rows"][0], out["rows"][-1]["devices"]
    if ref["peak_gib_so_far"] and not notes:  # GPUs report it; exact for the process's first run
      notes.append(f"{mode}: peak device memory of the 1-device global-batch reference "
                   f"{ref['peak_gib_so_far']:.1f} GiB")
    target = SCALING_TARGETS[mode]
    eff = next(r["efficiency"] for r in out["rows"] if r["setting"] == f"{target[0]}={n}")
    notes.append(f"{mode}: {target[0]}={n} efficiency {100 * eff:.1f}% (target >= "
                 f"{100 * target[1]:.0f}%{'' if n > 1 else ', meaningful for N > 1 only'})")
  tol = TOLERANCES[result["args"]["compute_dtype"]]
  notes.append(f"Tolerances ({result['args']['compute_dtype']}): loss rel {tol['loss']:g}, "
               f"grad-norm rel {tol['grad_norm']:g}, flips (|param diff| > lr/2) <= "
               f"{tol['flips']:g}" + (f", params max abs <= {tol['params']:g}"
                                      if tol["params"] is not None else ""))
  return lines + [""] + [f"- {x}" for x in notes]


def _load_lines(load: dict) -> list[str]:
  if "error" in load:
    return [f"Load: error: {load['error']}"]
  g = load["generate"]
  lines = [f"Load: {load['shards']} bf16 safetensors shards + index "
           f"({_fmt_bytes(load['checkpoint_bytes'])}), "
           f"`load_pretrained(dtype={load['load_dtype']})`"
           "; host memory deltas over the process before the load: peak RSS (VmHWM; includes the "
           "memory-mapped shard pages), peak anonymous RSS (sampled each ms: host copies), "
           "tracemalloc peak (numpy).", "",
           "| load | devices | time (s) | params on device 0 | host peak RSS Δ | "
           "host peak anon Δ | numpy peak | largest tensor |", "|" + "---|" * 8]
  for name, label in (("sharded", load["mesh"]), ("single", "1 device")):
    m = load[name]
    lines.append(f"| {label} | {m['devices']} | {m['load_s']:.1f} | "
                 f"{_fmt_bytes(m['device0_param_bytes'])} | "
                 f"{_fmt_bytes(m['host_peak_rss_delta_bytes'])} | "
                 f"{_fmt_bytes(m['host_peak_anon_delta_bytes'])} | "
                 f"{_fmt_bytes(m['numpy_peak_bytes'])} | {_fmt_bytes(m['largest_tensor_bytes'])} |")
  miss = g.get("first_mismatch")
  tie = (f"; first mismatch row {miss['row']} token {miss['position']}, single-device top-2 "
         f"logit gap {miss['top2_gap']:.3g}" if miss else "")
  return lines + ["", f"Greedy generate on {load['mesh']} vs 1 device (batch {g['batch']}, prompt "
                  f"{g['prompt_len']}, {g['new_tokens']} new): {g['matching_tokens']}/"
                  f"{g['total_tokens']} tokens equal{tie} — "
                  f"{'passed' if g['passed'] else '**FAILED**'}."]


def markdown(result: dict) -> str:
  """A RESULTS.md section: date, device, versions, command, tables."""
  env, a = result["environment"], result["args"]
  cfg, n = model_config(argparse.Namespace(**a)), env["devices"]
  lines = [f"## multi_gpu{' (tiny, CPU)' if a['tiny'] else ''}", "",
           f"{result['date']} · {n} × {env['device']} · jax {env['jax']}, flax {env['flax']}, "
           f"optax {env['optax']}, Python {env['python']}",
           f"Command: `{result['command']}`",
           f"Model: {'tiny LLaMA' if a['tiny'] else 'LLaMA-3.2-1B shape'} (hidden "
           f"{cfg['hidden_size']}, layers {cfg['num_hidden_layers']}, "
           f"{cfg['num_attention_heads']} q / {cfg['num_key_value_heads']} kv heads, MLP "
           f"{cfg['intermediate_size']}, vocab {cfg['vocab_size']}, tied, llama3 RoPE scaling), "
           f"random weights; {a['compute_dtype']} compute, float32 master weights, seq {a['seq']}, "
           f"per-GPU batch {a['batch']}, global batch {n * a['batch']}; attention "
           f"`{a['attention']}`; step time: median of {a['steps']} steps after {a['warmup']} "
           "warm-up (the first is the compared step).", ""]
  if result["train"]:
    lines += _train_lines(result) + [""]
  if result.get("load"):
    lines += _load_lines(result["load"])
  return "\n".join(lines)


def all_passed(result: dict) -> bool:
  train = list(result.get("train", {}).values())
  load = result.get("load")
  ok = all("error" not in m and all(r["check"]["passed"] for r in m["rows"] if "check" in r)
           for m in train)
  return ok and (load is None or ("error" not in load and load["generate"]["passed"]))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for the JSON")
  p.add_argument("--tiny", action="store_true", help="tiny model on 8 simulated CPU devices")
  p.add_argument("--devices", type=int, default=0, help="devices to use (default: all)")
  p.add_argument("--parts", default="full,lora,load", help="subset of full,lora,load")
  what = dict(seq="sequence length", batch="per-GPU batch", steps="timed steps",
              warmup="warm-up steps, the compared first step included",
              compute_dtype="training compute dtype", attention="attention_impl for training",
              prompt="generate: prompt length", new_tokens="generate: new tokens")
  for name, value in DEFAULTS.items():
    p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                   help=f"{what[name]}: {value} ({TINY_DEFAULTS[name]} with --tiny)")
  p.add_argument("--load-dtype", default="bfloat16",
                 help="load_pretrained dtype (with --tiny: the compute dtype)")
  p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  p.add_argument("--folder", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  for name, value in (TINY_DEFAULTS if args.tiny else DEFAULTS).items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  if args.tiny and args.load_dtype == "bfloat16":
    args.load_dtype = args.compute_dtype
  return args


def worker_main(args) -> dict:
  """``train``: the training modes, then (for ``load``) the checkpoint; ``load``: part (b)."""
  if args.worker == "load":
    return load_worker(args, args.folder)
  out = dict(train={}, environment=environment(args))
  for mode in ("full", "lora"):
    if mode in args.parts.split(","):
      try:
        out["train"][mode] = train_worker(mode, args)
      except Exception as e:  # noqa: BLE001 -- e.g. out of memory: reported, the rest still runs
        traceback.print_exc()
        out["train"][mode] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
      gc.collect()  # the failed mode's device buffers
  if args.folder:
    out["written"] = write_worker(args, args.folder)
  return out


def main(argv=None) -> dict:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  if args.worker:
    print(json.dumps(worker_main(args)), flush=True)
    return {}
  env, parts = child_env(args.tiny), args.parts.split(",")
  result = dict(date=time.strftime("%Y-%m-%d", time.gmtime()),
                command="PYTHONPATH=. python benchmarks/bench_multi_gpu.py " + shlex.join(argv),
                args=vars(args))
  with tempfile.TemporaryDirectory() as tmp:
    folder = ["--folder", os.path.join(tmp, "ckpt")] if "load" in parts else []
    first = _run_worker("train", argv + folder, env)
    result["train"] = first.get("train", {m: first for m in ("full", "lora") if m in parts})
    result["environment"] = first.get("environment")
    if "load" in parts:
      written = first.get("written", first)
      result["load"] = ({**written, **_run_worker("load", argv + folder, env)}
                        if "error" not in written else written)
  result["environment"] = result["environment"] or dict(
      dict.fromkeys(("device", "jax", "flax", "optax", "python"), "?"), devices=0)
  result["all_passed"] = all_passed(result)
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "bench_multi_gpu.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(markdown(result))
  print(f"\nwrote {path}; all equality checks passed: {result['all_passed']}")
  return result


if __name__ == "__main__":
  sys.exit(0 if main().get("all_passed", True) else 1)
