"""Global Prompt Cell (Liu et al. 2023, arXiv 2304.05642) — RECONSTRUCTED cell, METHODS.md §C.

The paper's gate equations are not available; this is the project's reconstruction, and results must be
labelled "GPC (reconstructed cell)". Prompt tuning (prompts.py) inserts P^0 [m, d] at the encoder input;
this `layer_input_hook` runs before every encoder layer l and, for l = 1..L-1, rewrites the m prompt rows
of the previous layer's output H_P^l with a gated memory C (depth plays the role of time):

  x   = [H_P^l ; C^{l-1}]                       (each half RMS-normalised by a learned-scale RMSNorm when
                                                 `normalize_inputs`, the default on T5 only, §C(8))
  F^l = σ(x W_f + b_f)                          forget gate: how much remembered prompt to keep
  R^l = σ(x W_r + b_r)                          remember gate (`num_gates=1`: R^l = 1 - F^l, GRU-style)
  (F^l, R^l) /= max(1, F^l + R^l)               elementwise, `max_gate_sum=1` (the default); None skips it
  C^l = F^l ⊙ C^{l-1} + R^l ⊙ H_P^l             C^0 = P^0, the prompt rows entering layer 0
  rows fed to layer l: C^l (`combine='replace'`) or H_P^l + C^l (`combine='add'`)

Text rows pass through unchanged; no cell runs after the last layer. W_f, W_r [2d, d], b [d] are shared by
all layers (`share_gates`) or owned per layer (modules `cell` or `cell_1..cell_{L-1}`); `diagonal_gates`
replaces x W by u ⊙ H_P + v ⊙ C (u, v [d]). Shared full gates cost 4d^2 + 2d (+ 2d norm scales);
diagonal ones 6d (METHODS §C(3)).
Init (§C(4), our choice): W ~ N(0, 0.02); b_f = +1.5, b_r = -1.5, the middle of the suggested ranges, so
the cell starts near "carry P^0, mix in a little of the layer output".
NOTE: the gate bound (our choice, not in §C(1)). Two free sigmoids sum to up to 2, and C^l then grows with
depth: nothing renormalises it, while BERT's text rows leave every post-LN layer at a fixed scale (~12 on
MiniLM-L6). With F + R <= 1, each element of C^l is a weighted mean (with weights summing to at most 1) of
C^{l-1} and H_P^l, so |C^l| <= max(|C^{l-1}|, |H_P^l|) elementwise: C never leaves the range of the layer
outputs it has seen (row norms can still exceed the larger input norm, up to sqrt(|C|^2 + |H_P|^2), when the
two rows are large in different elements). Where F + R <= 1 already the gates are unchanged; the GRU-style
single gate needs no bound. It applies to T5 too, where C still follows the growing residual stream.
"""
import functools
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.models import layers
from prompt_tuning_jax.peft import prompts

Array = jax.Array
KERNEL_INIT = nn.initializers.normal(stddev=0.02)


class CellGates(nn.Module):
  """The forget (and remember) gates of one cell over [H_P ; C] (reconstructed).

  Attributes:
    embed_dim: d. num_gates: 2 (forget + remember) or 1 (remember = 1 - forget).
    diagonal: σ(u ⊙ H + v ⊙ C + b) instead of σ([H ; C] W + b).
    normalize_inputs: RMS-normalise H and C (each with its own learned scale) before the gates.
    forget_bias / remember_bias: initial gate biases.
    max_gate_sum: with two gates, divide both by max(1, (F + R) / max_gate_sum) elementwise, so that
      F + R <= max_gate_sum (module docstring); None leaves them free.
  """
  embed_dim: int
  num_gates: int = 2
  diagonal: bool = False
  normalize_inputs: bool = False
  forget_bias: float = 1.5
  remember_bias: float = -1.5
  max_gate_sum: Optional[float] = 1.0

  def _gate(self, name: str, x: Array, bias: float) -> Array:
    """σ(x W + b) for x [b, m, 2d] -> [b, m, d]."""
    d = self.embed_dim
    if self.diagonal:
      kernel = layers.param_with_axes(self, f"{name}_kernel", KERNEL_INIT, (2 * d,), ("embed",))  # [u ; v]
      z = (x * kernel).reshape(x.shape[:-1] + (2, d)).sum(-2)  # u ⊙ H + v ⊙ C: [b, m, 2d] -> [b, m, d]
    else:
      kernel = layers.param_with_axes(self, f"{name}_kernel", KERNEL_INIT, (2 * d, d), ("embed", "mlp"))
      z = jnp.einsum("bme,ed->bmd", x, kernel)
    b = layers.param_with_axes(self, f"{name}_bias", nn.initializers.constant(bias), (d,), ("mlp",))
    return jax.nn.sigmoid(z + b)

  @nn.compact
  def __call__(self, hidden: Array, cell: Array) -> tuple[Array, Array]:
    """hidden H_P [b, m, d], cell C [b, m, d] (float32) -> (forget, remember) gates [b, m, d]."""
    if self.normalize_inputs:
      hidden = layers.RMSNorm(name="hidden_norm")(hidden)
      cell = layers.RMSNorm(name="cell_norm")(cell)
    x = jnp.concatenate([hidden, cell], axis=-1)  # [b, m, 2d]
    forget = self._gate("forget", x, self.forget_bias)
    if self.num_gates == 1:
      return forget, 1.0 - forget
    remember = self._gate("remember", x, self.remember_bias)
    if self.max_gate_sum is not None:
      excess = jnp.maximum(1.0, (forget + remember) / self.max_gate_sum)  # [b, m, d]
      forget, remember = forget / excess, remember / excess
    return forget, remember


class GlobalPromptCell(nn.Module):
  """The `layer_input_hook` of GPC (reconstructed cell, module docstring).

  Attributes:
    prompt_length: m. prompt_offset: index of the first prompt row (prompts.prompt_offset).
    num_layers: L, encoder layers. embed_dim: d.
    share_gates: one cell for all layers ("global") or one per layer.
    combine: 'replace' (rows = C^l) or 'add' (rows = H_P^l + C^l).
    cell_factory: builds one CellGates from `name=` (functools.partial of CellGates).
  """
  prompt_length: int
  prompt_offset: int
  num_layers: int
  embed_dim: int
  share_gates: bool = True
  combine: str = "replace"
  cell_factory: Callable[..., nn.Module] = CellGates

  def setup(self):
    names = ["cell"] if self.share_gates else [f"cell_{l}" for l in range(1, self.num_layers)]
    self.cells = [self.cell_factory(name=name) for name in names]

  def __call__(self, h: Array, *, layer: int, state: Optional[Array], context: dict,
               deterministic: bool = True) -> tuple[Array, Array]:
    """h [b, l, d] entering `layer`; state C^{layer-1} [b, m, d] float32 (None at layer 0) -> (h, C)."""
    del deterministic  # The cell has no dropout.
    o, m = self.prompt_offset, self.prompt_length
    prompt_rows = h[:, o:o + m].astype(jnp.float32)  # H_P: [b, l, d] -> [b, m, d]
    if layer == 0:
      text_length = context["tokens"].shape[1]
      if h.shape[1] != text_length + m:
        raise ValueError(f"GPC expects prompt_length={m} prompt rows: encoder length {h.shape[1]} != input "
                         f"length {text_length} + {m}; bind the same PROMPT_LENGTH to the prompt and the cell")
      return h, prompt_rows  # C^0 = P^0
    forget, remember = self.cells[0 if self.share_gates else layer - 1](prompt_rows, state)
    cell = forget * state + remember * prompt_rows  # C^l
    rows = cell if self.combine == "replace" else prompt_rows + cell
    h = jnp.concatenate([h[:, :o], rows.astype(h.dtype), h[:, o + m:]], axis=1)  # [b, l, d], new prompt rows
    return h, cell


def gpc_factory(*, where: str, backbone: str, num_layers: int, embed_dim: int, prompt_length: int,
                placement: Optional[str] = None, share_gates: bool = True, num_gates: int = 2,
                diagonal_gates: bool = False, combine: str = "replace", normalize_inputs: Optional[bool] = None,
                forget_bias: float = 1.5, remember_bias: float = -1.5,
                max_gate_sum: Optional[float] = 1.0) -> Optional[GlobalPromptCell]:
  """The `layer_input_hook` slot: a `GlobalPromptCell` named 'gpc' on the encoder, None elsewhere.

  Args:
    where / backbone / num_layers / embed_dim: from the backbone (models/slots.py).
    prompt_length / placement: must match the prompt factory's (gin: %PROMPT_LENGTH, %PROMPT_PLACEMENT).
    share_gates / combine: GlobalPromptCell attributes. num_gates / diagonal_gates / forget_bias /
      remember_bias / max_gate_sum: CellGates attributes (max_gate_sum=1 bounds the cell; None = the
      unbounded gates of the first reconstruction).
    normalize_inputs: RMS-normalise the gate inputs; None = on for T5, off for BERT (post-LN inputs).
  """
  if where != "encoder":
    return None
  if num_gates not in (1, 2):
    raise ValueError(f"GPC num_gates={num_gates}; expected 1 (GRU-style) or 2 (forget + remember)")
  if combine not in ("replace", "add"):
    raise ValueError(f"GPC combine={combine!r}; expected 'replace' or 'add'")
  if max_gate_sum is not None and max_gate_sum <= 0:
    raise ValueError(f"GPC max_gate_sum={max_gate_sum}; expected a positive bound (1 = convex) or None")
  normalize_inputs = backbone == "t5" if normalize_inputs is None else normalize_inputs
  cell_factory = functools.partial(CellGates, embed_dim, num_gates, diagonal_gates, normalize_inputs,
                                   forget_bias, remember_bias, max_gate_sum)
  return GlobalPromptCell(prompt_length, prompts.prompt_offset(backbone, placement), num_layers, embed_dim,
                          share_gates, combine, cell_factory, name="gpc")
