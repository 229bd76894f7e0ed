"""SGL prompts on a tiny real-format InternVL2 folder equal what the InternVL2 remote code's
``chat`` builds (its published ``internlm2-chat`` template written out here: system message,
``<image>\\n`` + question, ``<img><IMG_CONTEXT>*N</img>``, BOS from the tokenizer), for an image
of several tiles; a tile count < 1 is refused by name."""

import numpy as np
import pytest

from jaxvlm.errors import ConfigError
from jaxvlm.methods import sgl
from jaxvlm.models.chat import load_processor
from jaxvlm.models.tiny import write_tiny_vlm_folder

SYSTEM = ("你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
          "是一个有用无害的人工智能助手。")
QUESTION = "what number is on the red object?"
PROMPT = "{question} Answer the question using a single word or phrase."


def _remote_chat_query(question: str, tiles: int, tokens_per_tile: int) -> str:
  """``InternVLChatModel.chat``: ``<image>\\n`` + question in the MPT-separated template, then
  the ``<image>`` placeholder replaced by the tile tokens."""
  query = (f"<|im_start|>system\n{SYSTEM}<|im_end|><|im_start|>user\n<image>\n{question}"
           "<|im_end|><|im_start|>assistant\n")
  return query.replace("<image>", "<img>" + "<IMG_CONTEXT>" * tokens_per_tile * tiles + "</img>",
                       1)


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
  folder = write_tiny_vlm_folder("internvl_chat", str(tmp_path_factory.mktemp("ivl") / "m"),
                                 [QUESTION, "1", "2"] * 8, seed=0)
  return load_processor(folder)


@pytest.mark.parametrize("size, tiles", [((32, 32), 1), ((32, 64), 3), ((96, 32), 4)])
def test_prompt_ids_equal_remote_chat(processor, size, tiles):
  sample = type("S", (), dict(image=np.full(size + (3,), 90, np.uint8), question=QUESTION))()
  prompter = sgl.Prompter(processor, max_num=3)
  text = PROMPT.format(question=QUESTION)
  batch = prompter.batch([sample], [text])
  tok = processor.tokenizer
  want = tok(_remote_chat_query(text, tiles, processor.tokens_per_tile))["input_ids"]
  got = batch["input_ids"][0][batch["attention_mask"][0] > 0].tolist()
  assert got == want and want[0] == tok.bos_token_id  # BOS as chat's tokenizer call adds it
  assert prompter.num_tiles(sample) == tiles == batch["num_patches"][0]
  assert prompter.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
  counted = prompter.batch([sample], [text], pixels=False)  # shared vision: no pixels to cut
  assert "pixel_values" not in counted and batch["pixel_values"].shape[0] == tiles
  for key in ("input_ids", "attention_mask", "num_patches", "visual_tokens"):
    np.testing.assert_array_equal(counted[key], batch[key])


def test_tile_count_below_one_is_refused(processor):
  with pytest.raises(ConfigError, match="data.max_num.*0"):
    sgl.Prompter(processor, max_num=0)
