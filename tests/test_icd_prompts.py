"""ICD prompts on the shared VLM input path with the real Qwen2.5 vocabulary: Lever-Plus's
Qwen2.5-VL ICL layout equals the processor's own output, the InfoScore answer tokens are the
answer as a demonstration's answer appears, and CLIP embeddings of real-size images equal
``transformers``' CLIPModel on the CLIP processor's output."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import transformers

from jaxvlm.data import vlm_inputs
from jaxvlm.errors import ConfigError, ShapeError
from jaxvlm.methods import icd
from jaxvlm.models import load_pretrained
from jaxvlm.models.chat import without_video
from jaxvlm.models.chat_templates import QWEN2_5_VL
from real_tokenizers import qwen2_5_tokenizer


@dataclasses.dataclass(frozen=True)
class Sample:
  question_id: int
  image: np.ndarray
  question: str
  answer: str
  answers: tuple = ()


@pytest.fixture(scope="module")
def processor():
  ip = transformers.Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 64)
  return without_video(transformers.Qwen2_5_VLProcessor)(
      image_processor=ip, tokenizer=qwen2_5_tokenizer(), chat_template=QWEN2_5_VL)


def _samples(rng):
  sizes = [(60, 90), (120, 84), (75, 75)]  # each image its own grid
  texts = [("What is the man holding?", "umbrella"), ("Which sport is shown?", "tennis"),
           ("What color is the bus?", "red and white")]
  return [Sample(i, rng.integers(0, 256, (*hw, 3), np.uint8), q, a)
          for i, (hw, (q, a)) in enumerate(zip(sizes, texts))]


def test_two_shot_prompt_equals_the_processors_own_output(processor, rng):
  """The 2-shot episode: one user turn (image, "Question:.. Short answer:.." per demonstration,
  then the query image and its open question), the chat template's generation prompt."""
  demo1, demo2, query = _samples(rng)
  fmt = icd.PromptFormat(system="Answer briefly.")
  conv = fmt.conversation(query, [demo1, demo2])
  ours = vlm_inputs.encode(processor, [conv])
  messages = [{"role": "system", "content": "Answer briefly."},
              {"role": "user", "content": [
                  {"type": "image", "image": demo1.image},
                  {"type": "text",
                   "text": "Question:What is the man holding? Short answer:umbrella"},
                  {"type": "image", "image": demo2.image},
                  {"type": "text", "text": "Question:Which sport is shown? Short answer:tennis"},
                  {"type": "image", "image": query.image},
                  {"type": "text", "text": "Question:What color is the bus? Short answer:"}]}]
  ref = processor.apply_chat_template(messages, tokenize=True, return_dict=True,
                                      add_generation_prompt=True, return_tensors="np")
  np.testing.assert_array_equal(ours["input_ids"], ref["input_ids"])
  np.testing.assert_allclose(ours["pixel_values"], ref["pixel_values"])
  grids = np.asarray(ref["image_grid_thw"])
  np.testing.assert_array_equal(ours["image_grid_thw"], grids)
  assert len({tuple(g) for g in grids.tolist()}) == 3  # every image kept its own grid
  text = processor.tokenizer.decode(ref["input_ids"][0])
  assert text.endswith("Question:What color is the bus? Short answer:<|im_end|>\n"
                       "<|im_start|>assistant\n")


def test_infoscore_scores_the_answer_where_a_demonstration_answer_stands(processor, rng):
  demo, _, query = _samples(rng)
  fmt = icd.PromptFormat()
  conv = fmt.conversation(query, [demo], answer=query.answer)
  batch = vlm_inputs.encode(processor, [conv, fmt.conversation(demo, [query], answer="umbrella")],
                            add_generation_prompt=False)
  texts = [[fmt.text(query, query.answer)], [fmt.text(demo, "umbrella")]]
  mask = icd.answer_token_mask(processor.tokenizer, batch["input_ids"], texts,
                               [[query.answer], ["umbrella"]])
  tok = processor.tokenizer
  for row, answer in zip(range(2), (query.answer, "umbrella")):
    ids = batch["input_ids"][row][mask[row] == 1]
    # the answer's tokens as the demonstration writes them: ':' may merge with its first letter
    assert tok.decode(ids).lstrip(":") == answer
    after = batch["input_ids"][row][np.nonzero(mask[row])[0][-1] + 1]
    assert after == tok.convert_tokens_to_ids("<|im_end|>")
  demo_row = vlm_inputs.encode(processor, [fmt.conversation(query, [demo])])
  demo_mask = icd.answer_token_mask(tok, demo_row["input_ids"], [[fmt.text(demo, demo.answer)]],
                                    [[demo.answer]])
  demo_ids = demo_row["input_ids"][0][demo_mask[0] == 1]
  np.testing.assert_array_equal(demo_ids, batch["input_ids"][1][mask[1] == 1])
  with pytest.raises(ShapeError, match="not found"):
    icd.answer_token_mask(tok, batch["input_ids"], [["Question:absent Short answer:x"]] * 2,
                          [["x"]] * 2)


def test_prompt_template_must_end_in_the_answer():
  with pytest.raises(ConfigError, match="prompt.template"):
    icd.PromptFormat(template="Q: {question} A: {answer}.")


def test_clip_embeddings_of_real_size_images_match_transformers(tmp_path, rng):
  """480x640 and 427x640 images through the CLIP image processor (short side, centre crop):
  our image and text features equal ``CLIPModel``'s on the same processor output."""
  torch.manual_seed(0)
  cfg = transformers.CLIPConfig(
      text_config=dict(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=24, eos_token_id=99),
      vision_config=dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=2, image_size=28, patch_size=7),
      projection_dim=16)
  hf = transformers.CLIPModel(cfg).eval()
  hf.save_pretrained(tmp_path)
  image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": 28},
                                                    crop_size={"height": 28, "width": 28})
  images = [rng.integers(0, 256, (480, 640, 3), np.uint8),
            rng.integers(0, 256, (427, 640, 3), np.uint8)]

  class Tok:  # ids = characters, EOS 99 (the CLIP tokenizer's shape of output)
    eos_token_id, pad_token_id = 99, 0

    def __call__(self, text, truncation=True, max_length=16):
      return {"input_ids": [3 + ord(ch) % 90 for ch in text][:max_length - 1] + [99]}

  ours_img, ours_txt = icd.encode(load_pretrained(str(tmp_path)), image_processor, Tok(),
                                  images, ["a dog", "two red buses"], batch_size=2, max_len=16)
  px = image_processor(images=images, return_tensors="pt")["pixel_values"]
  ids, mask = icd.tokenize(Tok(), ["a dog", "two red buses"], 16)
  with torch.no_grad():
    ref_img = hf.get_image_features(pixel_values=px)
    ref_txt = hf.get_text_features(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
  ref_img = getattr(ref_img, "pooler_output", ref_img).numpy()
  ref_txt = getattr(ref_txt, "pooler_output", ref_txt).numpy()
  np.testing.assert_allclose(ours_img, ref_img, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ours_txt, ref_txt, rtol=1e-4, atol=1e-5)
  assert px.shape[-2:] == (28, 28)
