"""SMT models in Hugging Face transformers (docs/pretrained.md, "Hugging Face transformers").

    SMTConfig        the PreTrainedConfig of a model directory (every StrideHybridConfig field)
    SMTForCausalLM   a PreTrainedModel + GenerationMixin around the native model (smt.models.build_model),
                     with the native state-dict names, so one model directory loads both ways
    SMTCache         the transformers Cache that carries the native stream state through generate

Importing this package registers SMTConfig and SMTForCausalLM with AutoConfig and
AutoModelForCausalLM; without the import, `trust_remote_code=True` loads the same classes through
the two small files save_model_dir writes beside the weights (configuration_smt.py, modeling_smt.py).
"""

from smt.hf.configuration import SMTConfig
from smt.hf.modeling import SMTCache, SMTCausalLMOutput, SMTForCausalLM


def register() -> None:
    """Register SMTConfig / SMTForCausalLM with transformers' Auto classes (done on import)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoConfig.register(SMTConfig.model_type, SMTConfig, exist_ok=True)
    AutoModelForCausalLM.register(SMTConfig, SMTForCausalLM, exist_ok=True)


register()

__all__ = ["SMTCache", "SMTCausalLMOutput", "SMTConfig", "SMTForCausalLM", "register"]
