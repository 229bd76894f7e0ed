"""The published chat templates of the VLM families, written into tiny real-format folders.

Each is the Jinja template the family's checkpoints ship (``chat_template.jinja`` /
``tokenizer_config.json``), so a tiny folder renders prompts exactly as the real one does:

* :data:`QWEN2_5_VL` — Qwen2.5-VL-Instruct: ChatML with the default system turn and
  ``<|vision_start|><|image_pad|><|vision_end|>`` per image.
* :data:`LLAVA_1_5` — ``llava-hf/llava-1.5-*-hf``: ``USER: <image>\\n... ASSISTANT:``, images
  before the text of their turn.
* :data:`INTERNVL2` — InternVL2's ``internlm2-chat`` / ``Hermes-2`` conversation templates as
  ``InternVLChatModel.chat`` fills them (MPT separators: turns joined by ``<|im_end|>`` with no
  newline, the InternVL2 system message, ``<image>\\n`` per image before the turn's text).
"""

from __future__ import annotations

from jaxvlm.data.images import INTERNVL2_SYSTEM

QWEN2_5_VL = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

LLAVA_1_5 = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")

INTERNVL2 = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + INTERNVL2_SYSTEM + "<|im_end|>{% endif %}"
    "{% if message['role'] == 'system' %}<|im_start|>system\n{% else %}"
    "<|im_start|>{{ message['role'] }}\n{% endif %}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# InternVL2 ``config.json`` ``template`` names whose conversation renders as :data:`INTERNVL2`.
INTERNVL2_TEMPLATE_NAMES = ("internlm2-chat", "Hermes-2")
