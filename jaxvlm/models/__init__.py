"""Model families and the HF-folder loader (``load_pretrained``, ``from_config``, ``save_pretrained``)."""

from jaxvlm.models.registry import (
    FAMILIES,
    Family,
    config_from_hf,
    from_config,
    get_family,
    load_pretrained,
    read_config,
    register_family,
    save_pretrained,
)
from jaxvlm.models.chat import chat

__all__ = ["chat", "FAMILIES", "Family", "config_from_hf", "from_config", "get_family", "load_pretrained",
           "read_config", "register_family", "save_pretrained"]
