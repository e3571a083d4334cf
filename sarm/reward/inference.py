"""An exported reward model as a plain ``nn.Module`` that scores text: no Lightning involved.

    model = RewardModel.load("runs/demo/sarm/export")
    scores = model.score(prompts, responses)          # rewards, and the features behind them
    model.top_features(scores.features[0], k=5)       # [(feature, contribution), ...]

The backbone is rebuilt from what ``sarm.json`` records: the original model id/path and layer when
it was frozen, plus the saved LoRA adapters when it was trained with them, or the saved backbone
with the adapters merged in. Every file is checked as it is read (``sarm.reward.export``); the
adapters must be finite too, and the network must read the backbone's width, so a corrupt export
is refused with a named error before anything is scored.

A residualized SARM (kind ``residual_sarm``, ``sarm.reward.residual``) scores the same way; its ``Scores`` also
carry the residual term v · h̃ of each reward, so reward = Σ_i w_i z_i + residual, and ``top_features`` lists the
feature terms w_i z_i only (the residual is its own term, beside them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sarm.backbone import TruncatedBackbone, load_tokenizer
from sarm.data.pairs import pad_sequences
from sarm.data.render import render_response
from sarm.data.rows import Message
from sarm.errors import SarmInputError
from sarm.files import Fields, read_json_object, read_tensors
from sarm.reward.export import ADAPTER_DIR, BACKBONE_DIR, CONFIG, INCOMPLETE, compute_dtype, load_network
from sarm.reward.residual import ResidualSARMNetwork


@dataclass
class Scores:
    rewards: torch.Tensor  # [n]
    features: torch.Tensor  # [n, n_features] pooled features z; reward = head(z) (+ residual)
    residual: torch.Tensor | None = None  # [n] residual term v · h̃ of a residualized SARM; None for the others


class RewardModel(nn.Module):
    """Tokenizer + truncated backbone (+ adapters) + reward network, loaded from an export directory."""

    def __init__(self, network, backbone: TruncatedBackbone, tokenizer, config: dict):
        super().__init__()
        self.network, self.backbone, self.tokenizer, self.config = network, backbone, tokenizer, config
        self.max_length = int(config["backbone"].get("max_length") or 512)
        self.eval()

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu", dtype: str | None = None) -> RewardModel:
        """The exported model in ``directory`` on ``device``; its backbone computes in ``dtype``, by default the
        ``compute_dtype`` its training data was computed in (``float32`` unless its cache said otherwise)."""
        directory = Path(directory)
        network, config = load_network(directory)
        settings = Fields(config, directory / CONFIG).section("backbone")
        model, layer = settings.text("model"), settings.integer("layer", low=1)  # scoring needs both
        dtype = dtype or compute_dtype(config)
        weights = settings.data.get("weights", "reference")
        if weights == "merged":  # the saved backbone holds exactly the trained layers
            if not (directory / BACKBONE_DIR).is_dir():
                raise SarmInputError(f"{directory / BACKBONE_DIR}: missing ({INCOMPLETE})")
            backbone = TruncatedBackbone(str(directory / BACKBONE_DIR), layer, dtype)
        else:
            backbone = TruncatedBackbone(model, layer, dtype)
            if weights == "adapter":
                backbone.model = _load_adapters(backbone.model, directory / ADAPTER_DIR)
        width = network.input_size()
        if width != backbone.hidden_size:
            raise SarmInputError(
                f"{directory}: the reward network reads hidden states of width {width}, "
                f"its backbone ({model}, layer {layer}) has {backbone.hidden_size}"
            )
        backbone.requires_grad_(False)
        return cls(network, backbone, load_tokenizer(model), config).to(device)

    @property
    def device(self) -> torch.device:
        return self.feature_head.weight.device

    @property
    def residualized(self) -> bool:
        """Whether the network is a ``ResidualSARMNetwork`` (reward = feature terms + a residual term)."""
        return isinstance(self.network, ResidualSARMNetwork)

    @property
    def feature_head(self):
        """The head over the features ``Scores.features`` (``RewardNetwork.feature_head``)."""
        return self.network.feature_head

    def feature_term(self, z: torch.Tensor) -> torch.Tensor:
        """Σ_i w_i z_i of pooled features ``[..., n_features]``: the whole reward, less a residual term if any."""
        return self.feature_head.contributions(z).sum(-1)

    @torch.no_grad()
    def hidden_states(self, prompts: list[list[Message]], responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``([n, T, d], [n, T])``: the backbone's hidden states of one batch and its response mask."""
        rendered = [render_response(self.tokenizer, p, r, self.max_length) for p, r in zip(prompts, responses)]
        batch = {k: v.to(self.device) for k, v in pad_sequences(rendered, self.tokenizer.pad_token_id).items()}
        return self.backbone(batch["input_ids"], batch["attention_mask"]).float(), batch["response_mask"]

    @torch.no_grad()
    def score(
        self, prompts: list[list[Message]], responses: list[str], batch_size: int = 8, normalize: bool = False
    ) -> Scores:
        """Rewards of each (prompt conversation, final assistant response)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        rewards, features, residuals = [], [], []
        for start in range(0, len(responses), batch_size):
            hidden, mask = self.hidden_states(
                prompts[start : start + batch_size], responses[start : start + batch_size]
            )
            if self.residualized:
                z, residual = self.network.parts(hidden, mask)
                rewards.append(self.network.reward(z, residual).cpu())
                residuals.append(residual.cpu())
            else:
                z = self.network.features(hidden, mask)
                rewards.append(self.network.head(z).cpu())
            features.append(z.cpu())
        out = torch.cat(rewards) if rewards else torch.zeros(0)
        if normalize:
            out = self.normalize(out)
        width = self.feature_head.weight.numel()
        residual = (torch.cat(residuals) if residuals else torch.zeros(0)) if self.residualized else None
        return Scores(out, torch.cat(features) if features else torch.zeros(0, width), residual)

    def normalize(self, rewards: torch.Tensor) -> torch.Tensor:
        """(r − mean) / std with the validation rewards' statistics stored at training time
        (finite, std > 0: checked at load)."""
        norm = self.config.get("reward_norm", {"mean": 0.0, "std": 1.0})
        return (rewards - norm["mean"]) / norm["std"]

    def top_features(self, z: torch.Tensor, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` largest per-feature contributions (by magnitude) to one reward (or margin, for z_c − z_r)."""
        # z may come back on the CPU (``Scores``) while the head sits on the model's device
        contributions = self.feature_head.contributions(z.to(self.device)).detach().cpu()
        order = contributions.abs().topk(min(k, contributions.numel())).indices
        return [(int(i), float(contributions[i])) for i in order if contributions[i] != 0]


def _load_adapters(model, adapter_dir: Path):
    """``model`` with the LoRA adapters saved in ``adapter_dir``: their config must be a JSON object and
    their weights finite (peft would load a NaN as it is), else a named error."""
    from peft import PeftModel

    read_json_object(adapter_dir / "adapter_config.json", missing=INCOMPLETE)
    # sarm saves adapters with peft's default, safetensors; each tensor must be floating and finite.
    weights = read_tensors(adapter_dir / "adapter_model.safetensors", missing=INCOMPLETE)
    for name in weights:
        weights.get(name)
    try:
        return PeftModel.from_pretrained(model, adapter_dir)
    except (ValueError, RuntimeError, KeyError, TypeError) as e:  # a config or shape peft cannot apply
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SarmInputError(f"{adapter_dir}: LoRA adapters that do not fit the backbone ({reason})") from None
