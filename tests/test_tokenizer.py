"""HF tokenizers load from the checkpoint folder; a folder without one is refused by name."""

import numpy as np
import pytest
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from jaxvlm import errors
from jaxvlm.generation import generate
from jaxvlm.models import from_config
from jaxvlm.models.tokenizer import load_tokenizer


def make_tokenizer_folder(path):
  words = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(40)]
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                              eos_token="<eos>", unk_token="<unk>")
  fast.save_pretrained(path)


def test_load_tokenizer_and_generate_from_text(tmp_path):
  make_tokenizer_folder(tmp_path)
  tok = load_tokenizer(str(tmp_path))
  batch = tok(["w1 w2 w3", "w4"], padding=True, return_tensors="np")
  assert tok.padding_side == "left" and batch["attention_mask"][1, 0] == 0
  model = from_config(dict(model_type="llama", vocab_size=43, hidden_size=32, intermediate_size=48,
                           num_hidden_layers=1, num_attention_heads=4))
  out = generate(model, batch["input_ids"], batch["attention_mask"], 4)
  prompts = tok.batch_decode(np.asarray(out.sequences)[:, :out.prompt_length],
                             skip_special_tokens=True)
  assert prompts == ["w1 w2 w3", "w4"]
  assert np.asarray(out.new_tokens).shape == (2, 4)


def test_missing_tokenizer_is_named(tmp_path):
  with pytest.raises(errors.MissingFileError, match="tokenizer"):
    load_tokenizer(str(tmp_path))


_REMOTE_TOKENIZER = '''
from transformers import PreTrainedTokenizer


class CharTok(PreTrainedTokenizer):
  def __init__(self, **kwargs):
    self._vocab = {chr(i): i for i in range(32, 127)}
    super().__init__(**kwargs)

  @property
  def vocab_size(self):
    return 127

  def get_vocab(self):
    return dict(self._vocab)

  def _tokenize(self, text):
    return list(text)

  def _convert_token_to_id(self, token):
    return self._vocab.get(token, 0)

  def _convert_id_to_token(self, index):
    return chr(index)

  def save_vocabulary(self, save_directory, filename_prefix=None):
    return ()
'''


def test_remote_code_tokenizer_only_when_trusted(tmp_path):
  """A folder whose tokenizer is its own code (as InternLM2 / InternVL2 ones) loads with
  ``trust_remote_code`` and is refused without it."""
  (tmp_path / "char_tok.py").write_text(_REMOTE_TOKENIZER)
  (tmp_path / "tokenizer_config.json").write_text(
      '{"tokenizer_class": "CharTok", "eos_token": "~", '
      '"auto_map": {"AutoTokenizer": ["char_tok.CharTok", null]}}')
  tok = load_tokenizer(str(tmp_path), trust_remote_code=True)
  assert type(tok).__name__ == "CharTok" and tok("hi")["input_ids"][-2:] == [104, 105]
  assert tok.padding_side == "left" and tok.pad_token == "~"
  with pytest.raises(ValueError, match="custom code"):
    load_tokenizer(str(tmp_path))
