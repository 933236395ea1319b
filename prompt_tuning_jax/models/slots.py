"""The seam: named optional places where a PEFT method attaches to a frozen backbone.

A backbone receives one `Slots` value and hands it down; each layer asks the slot it owns for a module.
Every slot is a factory `factory(where=..., backbone=..., **dims) -> nn.Module | None`. `backbone` is
't5' or 'bert' (set by the model, so one method gin file serves both); `where` names the call site
(`'encoder'`, `'decoder'`, `'encoder/attention'`, `'decoder/self_attention'`,
`'decoder/encoder_decoder_attention'`, `'encoder/mlp'`, ...), so one method can decide where it acts and
return None elsewhere. The returned module chooses its own name (`prompt`, `lora_query`, `prefix`, ...):
module names are checkpoint paths and what the trainable mask matches.

With every slot None the backbone is exactly the base model (tested bit-for-bit).

Slot contracts (shapes use b=batch, l=length, d=embed, n=heads, h=head_dim):
  input_transform(where, embed_dim) -> m(embedded [b,l,d], mask [b,l], tokens [b,l], *, prompt_index, deterministic)
      -> (embedded [b,l',d], mask [b,l'])            prompt tuning (before input dropout); prompt_index [b]
                                                     or None picks each example's prompt from a bank;
                                                     embedded may be rows.RowBlocks (blocks joined by the
                                                     first layer after its row-wise work); m.token_rows(x
                                                     [b,l',...]) -> [b,l,...] drops the rows it inserted
                                                     (per-token heads return the input's rows only)
  layer_input_hook(where, num_layers, embed_dim) -> m(h [b,l,d], layer: int, state, context, *, deterministic)
      -> (h, state)                                  PASTA deltas, GPC cell between layers
  attention_kv_prefix(where, num_heads, head_dim) -> m(batch: int) -> (keys [b,p,n,h], values [b,p,n,h], gated)
                                                     gated: True = prefix columns join the softmax (prefix
                                                     tuning), False = a second attention added (ablation)
  projection_delta(where, target, in_features, out_features) -> m(x [...,in]) -> [...,out]   LoRA
  attention_head_adapter(where, embed_dim, num_heads, head_dim) -> m(x [b,l,d], *, deterministic) -> [b,l,n*h]
  mlp_extra(where, embed_dim, activations) -> m(x [b,l,d], *, deterministic) -> [b,l,d]
                                                     FL-tuning extra units (activations: the host FFN's)
  post_attention_adapter / post_mlp_adapter(where, embed_dim)
      -> m(sublayer_input [b,l,d], sublayer_output [b,l,d], *, deterministic) -> [b,l,d]
                                                     sequential / parallel / scaled adapters;
                                                     sublayer_output is the sublayer's output before the
                                                     backbone's dropout (attention) or after it (mlp:
                                                     ADAPTERS_AFTER_DROPOUT, METHODS.md §D(2))
"""
import dataclasses
from typing import Any, Callable, Optional

Factory = Optional[Callable[..., Any]]
ADAPTERS_AFTER_DROPOUT = frozenset({"post_mlp_adapter"})
"""Post-sublayer adapter slots that see Drop(F(x)) (the official code adds FFN adapters to dropout(fc2(...)));
the others see F(x) and the backbone drops their sum."""


@dataclasses.dataclass(frozen=True)
class Slots:
  """The method slots of a backbone; every field defaults to None (the base model)."""
  input_transform: Factory = None
  layer_input_hook: Factory = None
  attention_kv_prefix: Factory = None
  projection_delta: Factory = None
  attention_head_adapter: Factory = None
  mlp_extra: Factory = None
  post_attention_adapter: Factory = None
  post_mlp_adapter: Factory = None
  backbone: str = ""  # set by the model (`for_backbone`), handed to every factory

  def for_backbone(self, backbone: str) -> "Slots":
    return dataclasses.replace(self, backbone=backbone)

  def make(self, slot: str, **kwargs) -> Any:
    """Calls the factory bound to `slot` (with `backbone=`), or returns None when the slot is empty."""
    factory = getattr(self, slot)
    return None if factory is None else factory(backbone=self.backbone, **kwargs)


NO_SLOTS = Slots()


def factory_name(factory: Callable[..., Any]) -> str:
  """A factory's readable name, 'module.qualname' (e.g. 'lora.lora_factory'); a functools.partial is unwrapped."""
  factory = getattr(factory, "func", factory)
  return f"{getattr(factory, '__module__', '?').rsplit('.', 1)[-1]}.{getattr(factory, '__qualname__', factory)}"


def factory_names(slots: Optional[Slots]) -> dict[str, str]:
  """{slot: factory_name} of the slots a method binds (empty slots left out; None = no slots: {}).

  What the parameter report prints and a checkpoint's metadata records as the model's methods."""
  if slots is None:
    return {}
  return {name: factory_name(value) for name, value in vars(slots).items() if callable(value)}
