"""AdaLLaVA on a LLaVA-style :class:`VisionLanguageModel`: latency token, scheduler, token
controller.

Two budgets in ``(0, 1]`` drive it separately: the *latency budget* (layers, or units inside
them) and the *token budget* (``K`` of the ``N`` visual tokens of an image).

* :class:`LatencyEncoder` (the published ``scheduler_up_proj``): latency budget ``b`` -> units
  after the prefix ``u = relu(floor(T b) - P)`` (``T`` units in all, ``P`` in the prefix) ->
  ``q = u / (T - P + 1)`` -> ``sin, cos(2 pi q f_i)``, ``f_i = 10000^(-i/128)`` -> LayerNorm ->
  ``Linear -> GELU -> Linear`` -> the latency token's embedding, placed right after the image
  tokens (:func:`jaxvlm.models.multimodal.insert_token`).
* Scheduler: after the ``prefix_layers`` always-on layers, the latency token's hidden state ->
  ``Linear(hidden, L - prefix)`` -> exactly ``units = relu(floor(L b) - prefix)`` layers (Gumbel
  top-k in training, top-k at inference), applied through the decoder's ``layer_gates`` hook; at
  inference unselected layers are skipped (``skip_gated``), in prefill and every decode step (the
  plan rides in :class:`AdaCache`).
* ``granularity="head"``: the scheduler also picks units inside the chosen layers. A unit is one
  of the ``G = num_key_value_heads`` KV-head groups of a layer (its q heads, k/v head, o_proj rows
  and ``1/G`` of the MLP intermediate rows; :class:`~jaxvlm.methods.adallava.units.UnitGate`).
  Rule (:func:`unit_counts`): ``U = relu(floor(L G b) - prefix G)`` units after the prefix,
  ``n = ceil(U / G)`` layers (the layer scheduler's top-``n``) and ``g = ceil(U / n)`` units in
  each (top-``g`` per layer of a second head ``Linear(hidden, (L - prefix) G)``): ``n g >= U``,
  ``b = 1`` runs everything. Training computes every unit and multiplies each unit's head outputs
  and MLP activations by its straight-through gate (layer gate x unit gate). Inference with
  ``shared_plan`` and :attr:`BudgetInputs.units` (``g`` of the batch, a host-side function of the
  budget: static shapes) computes only the chosen units, in prefill and decode: the prefill cuts
  the chosen layers' weight slices once and keeps them, with a KV cache of only the chosen heads,
  in :class:`AdaCache` (a :class:`~jaxvlm.methods.adallava.units.UnitCache`); each decode step
  reads them and copies no weights or cache. Without ``shared_plan`` the unchosen units of a
  chosen layer are computed and masked (FLOPs counted, not saved); unchosen layers are skipped in
  both cases.
* Inference executes one plan per batch (``shared_plan``, the default): the scheduler's logits
  are averaged over the rows, so rows with equal budgets run the same layers / units and rows with
  smaller budgets run a subset of the largest row's (weighted 0 on the rest). Training draws a
  plan per row.
* :class:`TokenController`: scores over the N visual tokens conditioned on the token budget's
  sin / cos features; ``K = max(1, round(b_token N))`` kept (Gumbel top-K in training,
  ``pallas_kernels.select_tokens`` + ``keep_visual_tokens`` at inference, see
  :func:`budget_inputs`).
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import pallas_kernels
from jaxvlm.errors import ConfigError
from jaxvlm.layers.attention import KVCache
from jaxvlm.layers.linear import LayerNorm, Linear
from jaxvlm import frozen
from jaxvlm.models import multimodal as mm
from jaxvlm.models.llama.modeling import ModelOutput
from jaxvlm.methods.adallava.units import UnitCache, UnitGate, unit_cache
from jaxvlm.methods.adallava.gumbel import gumbel_topk, topk_mask


@dataclasses.dataclass(frozen=True)
class AdaConfig:
  """AdaLLaVA switches. ``latency_token_id`` must be a vocabulary id never used by the text."""

  latency_token_id: int
  prefix_layers: int = 1
  tau: float = 5.0
  latency_features: int = 128  # sin features (as many cos), of both budgets
  quant_levels: int = 100  # token budgets are rounded to multiples of 1 / quant_levels
  controller_hidden: int = 64
  shared_plan: bool = True  # inference: one plan per batch (mean scheduler logits)
  granularity: str = "layer"  # "layer" | "head" (units inside chosen layers, see the module doc)


GRANULARITIES = ("layer", "head")


@flax.struct.dataclass
class UnitCount:
  """Units computed per chosen layer, ``g`` (head granularity, ``shared_plan``): a trace-time
  constant (no array leaves), so the gathered shapes are static under ``jit``."""

  per_layer: int = flax.struct.field(pytree_node=False)


@flax.struct.dataclass
class AdaCache:
  """The decoder's KV cache plus the per-row plan fixed at prefill: layers ``[B, L]`` or, with
  head granularity, units ``[B, L, G]``. With gathered units ``kv`` is a ``UnitCache`` (the chosen
  heads' keys / values and weight slices of the layers after the prefix)."""

  kv: KVCache
  plan: jax.Array

  @property
  def index(self):
    return self.kv.index


def check_budget(budget, batch: int, field: str = "budget") -> np.ndarray:
  """``budget`` (scalar or ``[B]``) -> float32 ``[B]``; values outside ``(0, 1]`` raise an error
  naming ``field``."""
  b = np.asarray(jax.device_get(budget), np.float32)
  if b.ndim > 1 or (b.ndim == 1 and b.shape[0] != batch):
    raise ConfigError(field, b.shape, f"a scalar or a [batch={batch}] array")
  if not np.all((b > 0) & (b <= 1)):
    raise ConfigError(field, b.tolist(), "values in (0, 1]")
  return np.broadcast_to(b, (batch,)).copy()


def layer_count(budget, num_layers: int):
  """``floor(L * b)`` (with a small tolerance so that ``b = c / L`` gives ``c``)."""
  return jnp.floor(jnp.asarray(budget, jnp.float32) * num_layers + 1e-4).astype(jnp.int32)


def unit_counts(budget, num_layers: int, groups: int, prefix: int):
  """Head granularity: ``(n, g)`` per budget, ``n = ceil(U / G)`` layers after the prefix with
  ``g = ceil(U / n)`` units each (0 when ``U = 0``), ``U = relu(floor(L G b) - prefix G)``."""
  u = jnp.maximum(layer_count(budget, num_layers * groups) - prefix * groups, 0)
  n = -(-u // groups)
  return n, jnp.where(n > 0, -(-u // jnp.maximum(n, 1)), 0)


def visual_keep_count(budget, n: int):
  """``K = max(1, round(b N))`` per row."""
  return jnp.maximum(1, jnp.round(jnp.asarray(budget, jnp.float32) * n)).astype(jnp.int32)


def budget_features(q: jax.Array, n: int) -> jax.Array:
  """``[B, 2n]``: ``sin, cos(2 pi q f_i)`` with ``f_i = 10000^(-i/n)``, ``i < n``."""
  freqs = 1.0 / 10000.0 ** (jnp.arange(n, dtype=jnp.float32) / n)
  theta = 2 * math.pi * jnp.asarray(q, jnp.float32)[:, None] * freqs
  return jnp.concatenate([jnp.sin(theta), jnp.cos(theta)], axis=-1)


class LatencyEncoder(nnx.Module):
  """Latency budget -> quantised units (module docstring) -> sin / cos features -> LayerNorm ->
  ``Linear -> GELU -> Linear`` (the published ``scheduler_up_proj.net.{0,1,3}``)."""

  def __init__(self, cfg: AdaConfig, hidden: int, units: int, prefix_units: int,
               rngs: nnx.Rngs):
    self.n, self.units, self.prefix = cfg.latency_features, units, prefix_units
    self.norm = LayerNorm(2 * self.n)
    self.fc1 = Linear(2 * self.n, hidden, use_bias=True, rngs=rngs)
    self.fc2 = Linear(hidden, hidden, use_bias=True, rngs=rngs)

  def quantised(self, budget: jax.Array) -> jax.Array:
    """``q = relu(floor(T b) - P) / (T - P + 1)``."""
    u = jnp.maximum(layer_count(budget, self.units) - self.prefix, 0)
    return u.astype(jnp.float32) / (self.units - self.prefix + 1)

  def __call__(self, budget: jax.Array) -> jax.Array:
    f = self.norm(budget_features(self.quantised(budget), self.n))
    return self.fc2(jax.nn.gelu(self.fc1(f), approximate=False))


class TokenController(nnx.Module):
  """Score of each visual token given the token budget: ``w . gelu(A f + C e(b))``, ``e(b)`` the
  sin / cos features of the budget rounded to ``1 / quant_levels``."""

  def __init__(self, hidden: int, inner: int, features: int, levels: int, rngs: nnx.Rngs):
    self.n, self.levels = features, levels
    self.feat = Linear(hidden, inner, use_bias=True, rngs=rngs)
    self.budget = Linear(2 * features, inner, rngs=rngs)
    self.out = Linear(inner, 1, use_bias=True, rngs=rngs)

  def __call__(self, features: jax.Array, token_budget: jax.Array) -> jax.Array:
    """``features [B, N, H]``, ``token_budget [B]`` -> scores ``[B, N]`` (float32)."""
    b = jnp.round(jnp.asarray(token_budget, jnp.float32) * self.levels) / self.levels
    e = budget_features(b, self.n).astype(features.dtype)
    h = jax.nn.gelu(self.feat(features) + self.budget(e)[:, None])
    return self.out(h)[..., 0].astype(jnp.float32)


class AdaLlava(nnx.Module):
  """A LLaVA :class:`VisionLanguageModel` (``vlm``) with AdaLLaVA's budget-conditioned parts."""

  def __init__(self, vlm: nnx.Module, cfg: AdaConfig, rngs: nnx.Rngs):
    text = vlm.config.text
    layers, groups = text.num_hidden_layers, text.num_key_value_heads
    if cfg.granularity not in GRANULARITIES:
      raise ConfigError("adallava.granularity", cfg.granularity, f"one of {GRANULARITIES}")
    if cfg.granularity == "head" and text.intermediate_size % groups:
      raise ConfigError("intermediate_size", text.intermediate_size, f"a multiple of "
                        f"num_key_value_heads={groups} (head granularity splits the MLP rows)")
    if not 0 <= cfg.prefix_layers < layers:
      raise ConfigError("adallava.prefix_layers", cfg.prefix_layers,
                        f"an int in [0, {layers - 1}] (the LM has {layers} layers)")
    if cfg.latency_token_id in (vlm.config.image_token_id,):
      raise ConfigError("adallava.latency_token_id", cfg.latency_token_id,
                        "an id different from the image placeholder id")
    hidden = vlm.config.text.hidden_size
    self.config, self.num_layers = cfg, layers
    self.vlm = vlm
    self.groups = groups if cfg.granularity == "head" else 1
    self.latency_encoder = LatencyEncoder(cfg, hidden, layers * self.groups,
                                          cfg.prefix_layers * self.groups, rngs)
    self.scheduler = Linear(hidden, layers - cfg.prefix_layers, use_bias=True, rngs=rngs)
    if cfg.granularity == "head":
      self.unit_scheduler = Linear(hidden, (layers - cfg.prefix_layers) * groups, use_bias=True,
                                   rngs=rngs)
    self.controller = TokenController(hidden, cfg.controller_hidden, cfg.latency_features,
                                      cfg.quant_levels, rngs)

  @property
  def image_token_id(self) -> int:
    return self.vlm.config.image_token_id

  # ----- pieces ------------------------------------------------------------------------------
  def layer_units(self, budget) -> jax.Array:
    """Layers chosen after the prefix: ``relu(floor(L b) - prefix)`` (head granularity: ``n`` of
    :func:`unit_counts`)."""
    if self.config.granularity == "head":
      return self.unit_counts(budget)[0]
    return jnp.maximum(layer_count(budget, self.num_layers) - self.config.prefix_layers, 0)

  def unit_counts(self, budget):
    """``(n, g)`` of :func:`unit_counts` for this model."""
    return unit_counts(budget, self.num_layers, self.groups, self.config.prefix_layers)

  def _select(self, logits: jax.Array, k, rng, train: bool) -> jax.Array:
    if self.config.shared_plan and not train:
      logits = jnp.broadcast_to(logits.mean(0, keepdims=True), logits.shape)
    if train:
      return gumbel_topk(logits, k, self.config.tau, rng)
    return topk_mask(logits, k)

  def plan(self, hidden: jax.Array, budget, *, rng=None, train: bool = False) -> jax.Array:
    """Gates ``[B, L - prefix]`` from the latency token's hidden state ``[B, H]``; with head
    granularity unit gates ``[B, L - prefix, G]`` (layer gate x unit gate: exactly ``g`` units in
    each of the ``n`` chosen layers, none elsewhere)."""
    layers = self._select(self.scheduler(hidden).astype(jnp.float32), self.layer_units(budget),
                          rng, train)
    if self.config.granularity == "layer":
      return layers
    b, n = layers.shape
    logits = self.unit_scheduler(hidden).astype(jnp.float32).reshape(b, n, self.groups)
    g = jnp.broadcast_to(self.unit_counts(budget)[1][..., None], (b, n))
    units = self._select(logits, g, None if rng is None else jax.random.fold_in(rng, 1), train)
    return layers[..., None] * units

  def keep_tokens(self, scores: jax.Array, budget, *, rng=None) -> jax.Array:
    """Training: straight-through Gumbel top-K mask ``[B, N]`` of the visual tokens."""
    return gumbel_topk(scores, visual_keep_count(budget, scores.shape[1]), self.config.tau, rng)

  def embed_inputs(self, input_ids, image_features, latency: jax.Array) -> jax.Array:
    """Token embeddings with ``image_features [T, H]`` at the image placeholders and the latency
    embeddings ``[B, H]`` at the latency token (one per row)."""
    ids = jnp.asarray(input_ids)
    emb = self.vlm.embed_inputs(ids, image_features=image_features)
    return mm.merge_visual(emb, ids, latency, self.config.latency_token_id)

  def latency_index(self, input_ids) -> jax.Array:
    return jnp.argmax(jnp.asarray(input_ids) == self.config.latency_token_id, axis=1)

  # ----- generation hooks --------------------------------------------------------------------
  def init_cache(self, batch: int, max_len: int, dtype=None) -> AdaCache:
    shape = (batch, self.num_layers) + ((self.groups,) if self.config.granularity == "head"
                                        else ())
    return AdaCache(self.vlm.init_cache(batch, max_len, dtype), jnp.ones(shape, jnp.float32))

  def prefill_inputs(self, input_ids, attention_mask, *, image_features, budget,
                     position_ids=None, units: UnitCount | None = None):
    """For :func:`jaxvlm.generation.generate` on :func:`budget_inputs`' output (``units`` goes to
    the prefill and every decode step)."""
    budget = jnp.asarray(budget, jnp.float32)
    call = dict(inputs_embeds=self.embed_inputs(input_ids, image_features,
                                                self.latency_encoder(budget)),
                attention_mask=attention_mask, budget=budget,
                latency_index=self.latency_index(input_ids))
    if position_ids is not None:
      call["position_ids"] = position_ids
    if units is None:
      return call, {}
    return {**call, "units": units}, {"units": units}

  def layer_gate(self, plan: jax.Array, i: int, units: UnitCount | None, kv=None, *,
                 prefill: bool = False):
    """Layer ``i``'s gate from a full plan (``[B, L]`` or ``[B, L, G]``): ``[B]``, or for head
    granularity a :class:`UnitGate` (None in the prefix), computing the ``units.per_layer``
    units the batch's plan has on when ``units`` is given; with a :class:`UnitCache` ``kv`` the
    prefill stores their weight slices in it and a decode step reads them. With a cache ``kv``
    (inference) a whole layer is a one-unit :class:`UnitGate` too, whose skipping ``lax.cond``
    writes no cache layer (see :meth:`UnitGate.__call__`)."""
    if i < self.config.prefix_layers and (kv is not None or self.config.granularity == "head"):
      return None  # always on: run ungated
    if self.config.granularity == "layer":  # with a cache: one unit, the whole layer (units.py)
      return plan[:, i] if kv is None else UnitGate(plan[:, i:i + 1], layer=i)
    if units is None or units.per_layer == self.groups:  # every unit: nothing to gather
      return UnitGate(plan[:, i], layer=i)
    if not self.config.shared_plan:
      raise ConfigError("units", units.per_layer, "None unless adallava.shared_plan (gathered "
                        "units need one plan per batch)")
    union = jnp.max(plan[:, i], axis=0)  # shared logits: every row's units are in the largest set
    index = jnp.argsort(-union, stable=True)[:units.per_layer].astype(jnp.int32)
    if not isinstance(kv, UnitCache):
      return UnitGate(plan[:, i], index, layer=i)
    return UnitGate(plan[:, i], index, None if prefill else kv.slices[i], store=prefill,
                    layer=i)

  def __call__(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
               cache: AdaCache | None = None, *, budget=None, latency_index=None, rng=None,
               train: bool = False, logits_to_keep: int = 0,
               output_hidden_states: bool = False, attention_fn=None,
               units: UnitCount | None = None) -> ModelOutput:
    """LM forward under a budget. With ``budget`` (``[B]``; prefill / training) the plan is made
    after the prefix layers from the hidden state at ``latency_index [B]``; without, it is read from
    ``cache.plan`` (decode). ``train`` uses Gumbel top-k (``rng``) and computes every layer (for the
    straight-through gradient); otherwise unselected layers are skipped. ``attention_fn``
    replaces the LM's attention core (training's key-gated attention). ``units`` (head
    granularity with ``shared_plan``, inference): compute only ``units.per_layer`` units per chosen
    layer, which must be the largest ``g`` of the batch's budgets (:attr:`BudgetInputs.units`)."""
    prefix = self.config.prefix_layers
    kv = None if cache is None else cache.kv
    gathered = units is not None and units.per_layer < self.groups
    if gathered and budget is not None and kv is not None:  # prefill: cache the chosen units only
      kv = unit_cache(kv, self.vlm.language_model.model.layers, range(prefix, self.num_layers),
                      units.per_layer)
    if budget is None:
      if cache is None:
        raise ConfigError("budget", None, "a budget per row in (0, 1] (or a cache with a plan)")
      made = {"plan": cache.plan}
    else:
      budget = jnp.asarray(budget, jnp.float32)
      made = {}

    def gates(i, x):
      if "plan" not in made:
        if i < prefix:
          return None
        h = jnp.take_along_axis(x, jnp.asarray(latency_index)[:, None, None], axis=1)[:, 0]
        chosen = self.plan(h, budget, rng=rng, train=train)
        ones = jnp.ones((x.shape[0], prefix) + chosen.shape[2:], chosen.dtype)
        made["plan"] = jnp.concatenate([ones, chosen], axis=1)
      return self.layer_gate(made["plan"], i, units, kv, prefill=budget is not None)

    out = self.vlm.language_model(input_ids, attention_mask, position_ids, inputs_embeds, kv,
                                  layer_gates=gates, skip_gated=not train,
                                  logits_to_keep=logits_to_keep, attention_fn=attention_fn,
                                  output_hidden_states=output_hidden_states)
    if cache is not None:
      out = out.replace(cache=AdaCache(out.cache, jax.lax.stop_gradient(made["plan"]).astype(
          jnp.float32)))
    return out


# ----- host-side inference helpers ---------------------------------------------------------------
@flax.struct.dataclass
class BudgetInputs:
  """A pruned prompt with its latency token, ready for ``generate(model, input_ids,
  attention_mask, image_features=..., budget=..., position_ids=...)``; ``budget [B]`` is the
  latency budget, ``token_budget [B]`` the token budget and ``num_keep [B]`` = K.
  ``units``: head granularity with ``shared_plan``, the largest ``g`` of the rows' budgets (the
  units gathered per chosen layer); 0 otherwise (nothing gathered)."""

  input_ids: np.ndarray
  attention_mask: np.ndarray
  position_ids: np.ndarray
  image_features: jax.Array
  budget: np.ndarray
  token_budget: np.ndarray
  num_keep: np.ndarray
  units: int = flax.struct.field(pytree_node=False, default=0)

  def generate_kwargs(self) -> dict:
    kw = dict(image_features=self.image_features, budget=jnp.asarray(self.budget),
              position_ids=jnp.asarray(self.position_ids))
    return {**kw, "units": UnitCount(self.units)} if self.units else kw


@frozen.jit
def _visual_scores(model: AdaLlava, pixel_values, token_budget):
  feats = model.vlm.get_image_features(pixel_values)
  return feats, model.controller(feats, token_budget)


def budget_inputs(model: AdaLlava, input_ids, attention_mask, pixel_values, *, latency_budget,
                  token_budget, num_keep=None, implementation: str | None = None,
                  length: int | None = None) -> BudgetInputs:
  """Visual features -> controller scores under ``token_budget`` -> top-K per row
  (``select_tokens``) -> the prompt shortened by ``keep_visual_tokens`` (ids, mask, positions
  together) -> latency token inserted (its embedding and the plan come from ``latency_budget``).

  Budgets: scalars or ``[B]`` in ``(0, 1]``; ``num_keep`` overrides ``K`` (int or ``[B]``,
  ``1..N``). One image per row. ``length`` left-pads the result to a fixed length (one compiled
  ``generate`` for every batch of a budget).
  """
  ids = np.asarray(jax.device_get(input_ids))
  b = ids.shape[0]
  budget = check_budget(latency_budget, b, "latency_budget")
  token_budget = check_budget(token_budget, b, "token_budget")
  lat = model.config.latency_token_id
  if np.any(ids == lat):
    raise ConfigError("adallava.latency_token_id", lat, "an id the prompts never hold (the "
                      "encoded prompts already contain it)")
  feats, scores = _visual_scores(model, jnp.asarray(pixel_values), jnp.asarray(token_budget))
  n = feats.shape[1]
  if feats.shape[0] != b:
    raise ConfigError("pixel_values", feats.shape[0], f"one image per row ({b} rows)")
  k = np.asarray(visual_keep_count(token_budget, n)) if num_keep is None else np.broadcast_to(
      np.asarray(num_keep), (b,))
  if np.any(k < 1) or np.any(k > n):
    raise ConfigError("num_keep", np.asarray(k).tolist(), f"ints in [1, {n}] (N = {n} visual "
                      "tokens per image)")
  sel = pallas_kernels.select_tokens(scores, feats, jnp.asarray(k, jnp.int32), max_k=int(k.max()),
                                     implementation=implementation)
  pruned = mm.keep_visual_tokens(ids, attention_mask, model.image_token_id, sel.indices,
                                 keep_positions=False)
  rows = np.concatenate([np.arange(int(c)) + r * int(k.max()) for r, c in enumerate(k)])
  kept = sel.features.reshape(-1, feats.shape[-1])[rows]
  ins = mm.insert_token(pruned.input_ids, pruned.attention_mask, model.config.latency_token_id,
                        after_id=model.image_token_id)
  arrays = [ins.input_ids, ins.attention_mask, ins.position_ids]
  if length is not None:
    if length < arrays[0].shape[1]:
      raise ConfigError("length", length, f">= {arrays[0].shape[1]} (the budgeted prompt length)")
    arrays = [np.pad(a, ((0, 0), (length - a.shape[1], 0))) for a in arrays]
  units = 0
  if model.config.granularity == "head" and model.config.shared_plan:
    units = int(np.max(np.asarray(model.unit_counts(budget)[1])))
  return BudgetInputs(*arrays, kept, budget, token_budget, np.asarray(k, np.int32), units)


@frozen.jit
def _prefill_plan(model: AdaLlava, input_ids, attention_mask, image_features, budget,
                  position_ids):
  call, _ = model.prefill_inputs(input_ids, attention_mask, image_features=image_features,
                                 budget=budget, position_ids=position_ids)
  cache = model.init_cache(input_ids.shape[0], input_ids.shape[1])
  return model(cache=cache, logits_to_keep=1, **call).cache.plan


def unit_plan(model: AdaLlava, inputs: BudgetInputs) -> np.ndarray:
  """The ``{0, 1}`` plan that generation on ``inputs`` executes (one prefill): layers ``[B, L]``,
  or units ``[B, L, G]`` with head granularity (a row's own units: with ``shared_plan`` its layers
  run the batch's largest unit set, the others weighted 0)."""
  return np.asarray(_prefill_plan(model, jnp.asarray(inputs.input_ids),
                                  jnp.asarray(inputs.attention_mask), inputs.image_features,
                                  jnp.asarray(inputs.budget), jnp.asarray(inputs.position_ids)))


def layer_plan(model: AdaLlava, inputs: BudgetInputs) -> np.ndarray:
  """The ``{0, 1}`` layer plan ``[B, L]`` that generation on ``inputs`` executes (a layer runs
  when some unit of it does)."""
  plan = unit_plan(model, inputs)
  return plan.max(-1) if plan.ndim == 3 else plan


def executed_units(model: AdaLlava, inputs: BudgetInputs) -> np.ndarray:
  """Units (KV-head groups, ``G`` per whole layer) each layer computes when generation runs the
  batch ``inputs`` ``[L]``: a layer runs for the whole batch when some row's plan has it (the
  union), with every unit, or with head granularity and ``shared_plan`` the ``inputs.units``
  gathered ones; the FLOPs of every row of the batch are those of this plan."""
  plan = unit_plan(model, inputs)
  runs = (plan.max(-1) if plan.ndim == 3 else plan).max(0) > 0
  groups = model.vlm.config.text.num_key_value_heads
  width = np.full(model.num_layers, groups)
  if inputs.units and model.config.granularity == "head":
    width[model.config.prefix_layers:] = inputs.units
  return np.where(runs, width, 0).astype(np.int64)
