"""Adaptive per-head sparse attention for diffusion LLMs (seed 001, SparseD)."""
