"""gin_utils' readers of a parsed config: `configured_macro` (MODEL, OPTIMIZER, ...) and `configured`."""
import pytest

from prompt_tuning_jax import gin_utils
from prompt_tuning_jax.models import t5, t5_config
from prompt_tuning_jax.peft import trainable


def test_configured_macro_calls_references_and_returns_values():
  gin_utils.parse_gin(["models/t5_1_1_small.gin", "methods/lora.gin"], ["t5_config.preset.num_encoder_layers = 2"])
  model = gin_utils.configured_macro("MODEL")
  assert isinstance(model, t5.T5) and model.config == t5_config.preset("t5_1_1_small", num_encoder_layers=2)
  assert gin_utils.configured_macro("MODEL") is not model  # a fresh one per call, as gin builds it
  assert gin_utils.configured_macro("LORA_RANK") == 8  # a plain value comes back as it is
  assert callable(gin_utils.configured_macro("OPTIMIZER").update)  # @optimizers.unified_optimizer()


def test_an_unbound_macro_gives_the_default_or_an_error_naming_it():
  gin_utils.parse_gin(["models/t5_1_1_small.gin"])
  assert gin_utils.configured_macro("OPTIMIZER", default=None) is None
  with pytest.raises(ValueError, match="no parsed gin file or binding defines the macro OPTIMIZER"):
    gin_utils.configured_macro("OPTIMIZER")


def test_configured_applies_the_parsed_bindings_or_returns_the_function():
  gin_utils.parse_gin(["models/t5_1_1_small.gin", "methods/full_finetuning.gin"])
  params = {"encoder": {"kernel": 0}, "prompt": {"prompt": 0}}
  assert gin_utils.configured(trainable.trainable_mask)(params) == {"encoder": {"kernel": True},
                                                                   "prompt": {"prompt": True}}  # train_all
  gin_utils.parse_gin(["models/t5_1_1_small.gin"])
  assert gin_utils.configured(trainable.trainable_mask)(params) == {"encoder": {"kernel": False},
                                                                   "prompt": {"prompt": True}}
  unregistered = lambda x: x
  assert gin_utils.configured(unregistered) is unregistered
