"""LoRA adapters on the truncated backbone (peft), optionally on its last layers only.

Adapting only the last ``n`` kept layers leaves the layers below without trainable parameters, so
autograd never records them: the backward pass costs n layers, not L. That is what makes LoRA
training affordable on a CPU, and it is where the reward-relevant features are read anyway.
"""

from __future__ import annotations

from sarm.backbone import TruncatedBackbone
from sarm.errors import SarmInputError


def add_lora(
    backbone: TruncatedBackbone,
    r: int = 16,
    alpha: float = 32.0,
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
    last_layers: int | None = None,
) -> None:
    """Wrap ``backbone.model`` in a peft ``PeftModel`` with LoRA adapters (in place); only they train.

    Args:
        r, alpha, dropout: LoRA rank, scaling numerator and dropout.
        target_modules: module names to adapt; default: peft's choice for the architecture
            (for Llama-style models in peft 0.21: q_proj and v_proj).
        last_layers: adapt only the last this-many kept layers (None: all of them).
    """
    from peft import LoraConfig, get_peft_model

    if last_layers is not None and not 1 <= last_layers <= backbone.layer:
        raise SarmInputError(f"lora_layers = {last_layers}: the backbone keeps layers 1..{backbone.layer}")
    layers = None if last_layers is None else list(range(backbone.layer - last_layers, backbone.layer))
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        layers_to_transform=layers,
        layers_pattern="layers" if layers else None,
    )
    backbone.model = get_peft_model(backbone.model, config)


def has_lora(backbone: TruncatedBackbone | None) -> bool:
    return backbone is not None and hasattr(backbone.model, "peft_config")
