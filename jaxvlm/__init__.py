"""jaxvlm: JAX/Flax NNX research library (backbones with HF parity, diffusion LLMs, methods)."""

__version__ = "0.1.0"
