"""models/slots.py's factory names: what the parameter report prints and a checkpoint records."""
import functools

from prompt_tuning_jax.models import slots
from prompt_tuning_jax.peft import adapters, lora


def test_factory_names_of_the_bound_slots():
  bound = slots.Slots(projection_delta=functools.partial(lora.lora_factory, rank=4),
                      post_mlp_adapter=adapters.adapter_factory, backbone="bert")
  assert slots.factory_names(bound) == {"projection_delta": "lora.lora_factory",
                                        "post_mlp_adapter": "adapters.adapter_factory"}
  assert slots.factory_names(slots.NO_SLOTS) == {} and slots.factory_names(None) == {}
  assert slots.factory_name(functools.partial(functools.partial(lora.lora_factory, rank=4), alpha=8.0)) == \
      "lora.lora_factory"  # a partial of a partial is flattened by functools
