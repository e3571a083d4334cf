"""SARM: a reward model whose scalar head reads the features of an SAE.

    h = backbone_L(text)                 residual stream after layer L (cached, or run with LoRA)
    z = pool(SAE(standardize(h)))        TopK latents (or pre-activations) at the last response
                                         token, or their mean over the response
    reward = w · z                       no bias, zero init: an exact sum of feature contributions

The SAE is frozen in modes ``head`` and ``lora``; in ``joint`` it trains too, with its own
reconstruction loss on the detached hidden states so that it stays a faithful dictionary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from sarm.errors import SarmInputError
from sarm.files import Fields, read_json_object
from sarm.reward.export import CONFIG, load_network
from sarm.reward.module import RewardModelModule
from sarm.reward.network import SARMNetwork
from sarm.reward.pooling import last_positions
from sarm.sae.io import load_sae
from sarm.sae.module import normalized_mse


class SARM(RewardModelModule):
    """SAE-enhanced reward model.

    Args:
        sae: directory of a trained SAE (sarm, SAELens or sparsify layout), or of an exported SARM
            to continue from (its SAE and head are loaded).
        features: the head reads the SAE's TopK ``latents`` or its ``pre``-activations.
        reconstruction_coefficient: weight λ of the SAE's reconstruction loss in ``joint`` mode.
        sae_lr: learning rate of the SAE in ``joint`` mode.
        **kwargs: the shared arguments of ``RewardModelModule`` (mode, pooling, lr, LoRA, export_dir, ...).
    """

    def __init__(self, sae: str, features: Literal["latents", "pre"] = "latents",
                 reconstruction_coefficient: float = 1.0, sae_lr: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        path = Path(sae)
        if (path / CONFIG).is_file():
            network, config = load_network(path)
            if config["kind"] != "sarm":
                raise SarmInputError(f"{path / CONFIG}: a {config['kind']!r} reward model has no SAE to continue from")
            self.network = SARMNetwork(network.sae, self.hparams.pooling, features)
            self.network.head.load_state_dict(network.head.state_dict())
            self.sae_provenance = {"model_name": config["backbone"].get("model"),
                                   "hook_layer": config["backbone"].get("layer")}
        else:
            self.network = SARMNetwork(load_sae(path), self.hparams.pooling, features)
            cfg = path / "cfg.json"  # present unless the SAE is sparsify's
            fields = Fields(read_json_object(cfg) if cfg.is_file() else {}, cfg)
            self.sae_provenance = {"model_name": fields.text("model_name", None, nullable=True),
                                   "hook_layer": fields.integer("hook_layer", low=0, default=None, nullable=True)}
        self.init_head()
        joint = self.hparams.mode == "joint"
        self.sae.requires_grad_(joint)
        if not joint:
            self.sae.eval()

    @property
    def sae(self):
        return self.network.sae

    def train(self, mode: bool = True):
        super().train(mode)
        if self.hparams.mode != "joint":
            self.sae.eval()  # frozen: never in training mode
        return self

    def check_backbone(self, settings: dict) -> None:
        """Refuse data from another layer or another model than the SAE was trained on: the same width
        does not make another model's hidden states readable by this SAE's features."""
        layer, model = self.sae_provenance.get("hook_layer"), self.sae_provenance.get("model_name")
        if layer is not None and settings.get("layer") is not None and int(layer) != int(settings["layer"]):
            raise SarmInputError(f"the SAE was trained on layer {layer} of {model}, "
                                 f"the data comes from layer {settings['layer']} of {settings.get('model')}")
        if model and settings.get("model") and not _same_model(model, settings["model"]):
            raise SarmInputError(f"the SAE was trained on '{model}', the data comes from '{settings['model']}' "
                                 f"(layer {settings.get('layer')}): train an SAE on this model's activations")

    def trainable_parameters(self) -> list[dict]:
        groups = super().trainable_parameters()
        if self.hparams.mode == "joint":
            groups.append({"params": list(self.sae.parameters()), "lr": self.hparams.sae_lr, "weight_decay": 0.0})
        return groups

    def extra_loss(self, scored: dict) -> tuple[torch.Tensor, dict]:
        if self.hparams.mode != "joint":
            return super().extra_loss(scored)
        # Reconstruct the tokens the reward reads, from hidden states cut off from the backbone.
        hidden, mask = scored["hidden"].detach(), scored["mask"].bool()
        if self.hparams.pooling == "mean":
            tokens = hidden[mask]
        else:
            tokens = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_positions(mask)]
        out = self.sae(tokens)
        fvu = normalized_mse(out.x, out.x_hat)
        return self.hparams.reconstruction_coefficient * fvu, {"train/sae_fvu": fvu}

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.hparams.mode == "joint":
            self.sae.remove_parallel_decoder_grad()

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """The step, then (joint mode) unit decoder rows, before any callback's ``on_train_batch_end``: a
        step checkpoint must hold the decoder the uninterrupted run goes on with (as in ``SAEModule``)."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.hparams.mode == "joint":
            self.sae.normalize_decoder()


def _same_model(a: str, b: str) -> bool:
    """Two model names are the same model: equal, or two spellings of one local directory."""
    if a == b:
        return True
    return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
