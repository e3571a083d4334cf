"""Pairwise reward-model training, shared by SARM and the dense baseline.

    loss = −log σ(r_chosen − r_rejected − margin)            Bradley–Terry (margin: optional column)
         + reward_centering · mean((r_chosen + r_rejected)²)  keeps rewards near 0 (optional)
         + head_l1 · ‖w‖₁                                      sparser heads (optional)
         + (joint mode) reconstruction_coefficient · FVU of the SAE on the detached hidden states

Train modes:

    head    backbone and SAE frozen; only the head trains. With cached activations
            (``PairActivationDataModule``) the backbone never runs.
    lora    LoRA adapters on the backbone (peft) + head; the SAE stays frozen. Needs text batches
            (``PairTextDataModule``).
    joint   LoRA + head + the SAE itself (SARM only), the SAE also pulled toward reconstructing the
            hidden states it reads (detached: reconstruction does not steer the backbone).

Batches hold both sides of each pair stacked: rows [0, B) chosen, [B, 2B) rejected, either as
token ids (``input_ids``, ``attention_mask``, ``response_mask``) or as cached hidden states
(``hidden`` ``[2B, T, d]`` with ``mask``); plus ``margin``, ``pair`` and ``subset`` per pair.

The data module is read through ``sarm.reward.data.RewardData`` only, in ``setup``: its hidden size,
backbone settings, subsets and whether it yields tokens; the model hands it its pooling there.

Restarting: ``init_from`` names an exported reward model of the same kind (``sarm.json``). Its
weights start this one (SARM: its SAE and head; dense: its head), and its pooling (SARM: and its
features) are this model's unless given, when they must agree. It is the one way to go on from an
export: a second training stage, or ``sarm test`` of a trained model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics import MeanMetric

from sarm.backbone import TruncatedBackbone, hub_id
from sarm.data.splits import SPLITS
from sarm.errors import SarmInputError
from sarm.reward.data import reward_data
from sarm.reward.export import load_network, read_config, save_reward_model
from sarm.reward.lora import add_lora, has_lora
from sarm.reward.loss import bradley_terry_loss
from sarm.reward.metrics import RewardStats, SubsetAccuracy
from sarm.reward.network import RewardNetwork
from sarm.reward.pooling import Pooling
from sarm.sae.losses import check_finite

Mode = Literal["head", "lora", "joint"]
STAGES = ("train", "val", "test")


class RewardModelModule(L.LightningModule):
    """Trains a ``RewardNetwork`` (built by the subclass) on preference pairs.

    Args:
        mode: ``head``, ``lora`` or ``joint`` (see the module docstring).
        pooling: read the reward at the ``last`` response token or from the ``mean`` over the response.
            Default: ``init_from``'s pooling, else ``last``. The one place pooling is set: the data
            module takes it from here.
        lr: AdamW learning rate of the head.
        weight_decay: AdamW weight decay of the head.
        head_l1: L1 penalty on the head's weights.
        reward_centering: weight of the mean squared sum of the pair's rewards (TRL's
            ``center_rewards_coefficient``); 0 turns it off.
        lora_r, lora_alpha, lora_dropout: LoRA rank, alpha and dropout.
        lora_target_modules: modules to adapt (default: peft's choice for the architecture).
        lora_layers: adapt only the last this-many backbone layers (default: all).
        backbone_lr: learning rate of the LoRA adapters.
        merge_lora: export the backbone with the adapters merged into it, instead of separately.
        gradient_checkpointing: recompute the backbone's activations in the backward pass (LoRA and
            joint modes): less memory for long sequences and large models, about a third more compute.
        init_from: an exported reward model of the same kind to restart from (its weights, pooling and
            features; e.g. a head-only model, then fine-tuned with LoRA; or a trained model to test).
        export_dir: where the trained model is written for inference without Lightning.
    """

    kind = "base"  # the kind of reward model (sarm.json's "kind") a subclass trains: "sarm" or "dense"

    def __init__(
        self,
        mode: Mode = "head",
        pooling: Pooling | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        head_l1: float = 0.0,
        reward_centering: float = 0.0,
        lora_r: int = 16,
        lora_alpha: float = 32.0,
        lora_dropout: float = 0.0,
        lora_target_modules: list[str] | None = None,
        lora_layers: int | None = None,
        backbone_lr: float = 1e-4,
        merge_lora: bool = False,
        gradient_checkpointing: bool = False,
        init_from: str | None = None,
        export_dir: str | None = None,
    ):
        super().__init__()
        if mode not in ("head", "lora", "joint"):
            raise SarmInputError(f"mode = {mode!r}: expected 'head', 'lora' or 'joint'")
        if pooling not in ("last", "mean", None):
            raise SarmInputError(f"pooling = {pooling!r}: expected 'last' or 'mean'")
        self.save_hyperparameters()
        # Kept as given (hparams are what the CLI and checkpoints replay); the resolved values live here.
        self.export_config = read_config(init_from) if init_from is not None else None
        self.pooling: Pooling = self.from_export("pooling", pooling, "last")
        # The backbone (model, layer) the network's weights were trained on, and who says so.
        self.trained_on: dict = {}
        if self.export_config is not None:
            backbone = self.export_config["backbone"]
            self.trained_on = {
                "model": backbone.get("model"),
                "layer": backbone.get("layer"),
                "by": f"the reward model {init_from}",
            }
        self.network: RewardNetwork | None = None
        self.backbone: TruncatedBackbone | None = None
        self.backbone_settings: dict = {}
        self.subsets: SubsetAccuracy | None = None
        self.metrics = torch.nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric() for stage in STAGES for name in ("accuracy", "margin")}
        )
        self.reward_stats = torch.nn.ModuleDict({f"{stage}_rewards": RewardStats() for stage in STAGES})
        # Validation rewards' mean and std: stored with the model, used to normalize scores.
        self.register_buffer("reward_norm", torch.tensor([0.0, 1.0]))

    # -- building ---------------------------------------------------------------------------------

    def build_network(self, hidden_size: int) -> RewardNetwork:
        """The network, when it could not be built in ``__init__`` (it waited for the data's width)."""
        raise NotImplementedError

    def from_export(self, name: str, given, default):
        """A setting restarted from ``init_from``: the export's, which a given value must equal."""
        if self.export_config is None:
            return default if given is None else given
        exported = self.export_config.get(name, default)
        if given is not None and given != exported:
            raise SarmInputError(
                f"{name} = {given!r}, but init_from = {self.hparams.init_from} was trained with "
                f"{name} {exported!r}: leave {name} unset to restart with the export's"
            )
        return exported

    def restart_network(self) -> RewardNetwork:
        """The network of ``init_from`` (weights included), which must be of this module's kind."""
        network, config = load_network(self.hparams.init_from)
        if config["kind"] != self.kind:
            raise SarmInputError(
                f"init_from = {self.hparams.init_from}: a {config['kind']} model with "
                f"{network.head.weight.numel()} features cannot start a {self.kind} model"
            )
        return network

    def setup(self, stage: str) -> None:
        data = reward_data(self.trainer.datamodule)
        data.take_pooling(self.pooling)  # before any loader is built: batches are made for this pooling
        settings = dict(data.backbone_settings)
        self.check_backbone(settings)
        self.backbone_settings = settings
        if self.network is None:
            self.network = self.build_network(data.hidden_size)
        width = self.network.input_size()
        if width is not None and width != data.hidden_size:
            raise SarmInputError(
                f"the reward network reads hidden states of width {width}, the data's backbone "
                f"({settings.get('model')}, layer {settings.get('layer')}) has {data.hidden_size}"
            )
        needs_backbone = self.hparams.mode != "head" or data.yields_tokens
        if needs_backbone and not data.yields_tokens:
            raise SarmInputError(
                f"mode = {self.hparams.mode!r} runs the backbone: use "
                "sarm.data.pairs.PairTextDataModule (cached activations serve mode 'head' only)"
            )
        if needs_backbone and self.backbone is None:
            self.backbone = TruncatedBackbone(settings["model"], settings["layer"])
            self.backbone.requires_grad_(False)
            if self.hparams.mode != "head":
                h = self.hparams
                if h.gradient_checkpointing:  # non-reentrant: the frozen embeddings need not require grad
                    self.backbone.model.gradient_checkpointing_enable({"use_reentrant": False})
                add_lora(self.backbone, h.lora_r, h.lora_alpha, h.lora_dropout, h.lora_target_modules, h.lora_layers)
        if data.subsets and self.subsets is None:
            self.subsets = SubsetAccuracy(data.subsets).to(self.device)

    def check_backbone(self, settings: dict) -> None:
        """Refuse data from another layer or another model than the weights were trained on (``trained_on``):
        the same width does not make another model's hidden states readable by them."""
        layer, model, by = (self.trained_on.get(k) for k in ("layer", "model", "by"))
        if layer is not None and settings.get("layer") is not None and int(layer) != int(settings["layer"]):
            raise SarmInputError(
                f"{by} was trained on layer {layer} of {model}, "
                f"the data comes from layer {settings['layer']} of {settings.get('model')}"
            )
        if model and settings.get("model") and not _same_model(model, settings["model"]):
            raise SarmInputError(
                f"{by} was trained on '{model}', the data comes from '{settings['model']}' "
                f"(layer {settings.get('layer')}): train on this model's activations"
            )

    def trainable_parameters(self) -> list[dict]:
        h = self.hparams
        groups = [{"params": list(self.network.head.parameters()), "lr": h.lr, "weight_decay": h.weight_decay}]
        if has_lora(self.backbone):
            groups.append(
                {
                    "params": [p for p in self.backbone.parameters() if p.requires_grad],
                    "lr": h.backbone_lr,
                    "weight_decay": 0.0,
                }
            )
        return groups

    def configure_optimizers(self):
        return torch.optim.AdamW(self.trainable_parameters())

    # -- forward ----------------------------------------------------------------------------------

    def hidden_states(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``([2B, T, d], [2B, T])``: hidden states and response mask of both sides of the pairs."""
        if "input_ids" in batch:
            hidden = self.backbone(batch["input_ids"], batch["attention_mask"])
            return hidden.float(), batch["response_mask"]
        return batch["hidden"].float(), batch["mask"]

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Rewards of hidden states: ``[B, d]`` last tokens, or ``[B, T, d]`` with a response mask."""
        return self.network(hidden, mask)

    @property
    def features_frozen(self) -> bool:
        """Head mode, with nothing but the head's weight trainable: the pooled features of cached activations
        never change, so they can be pooled once (``serve_pooled_features``)."""
        return self.hparams.mode == "head" and not any(
            p.requires_grad for p in self.network.parameters() if p is not self.network.head.weight
        )

    def serve_pooled_features(self, splits: tuple[str, ...]) -> None:
        """With frozen features on cached activations, pool ``splits`` once (on the model's device, or read what an
        earlier command kept: ``sarm.reward.pooled``) and serve them to the batches
        (``PairActivationDataModule.serve_pooled``): an epoch, a test or a predict pass is then a pass of the head
        alone."""
        data = self.trainer.datamodule
        if not self.features_frozen or data is None or data.yields_tokens or not hasattr(data, "serve_pooled"):
            return
        from sarm.reward.pooled import pooled_features

        network = self.network
        was_training = network.training  # pooled_features puts the network in eval mode

        def pool(split: str) -> tuple[torch.Tensor, torch.Tensor]:
            chosen, rejected, _ = pooled_features(network, data, split)
            return chosen, rejected

        served = data.serve_pooled(pool, network.head.weight.numel(), splits)
        network.train(was_training)
        if not served:
            print("sarm: pooled features too large to keep in memory: hidden states are pooled every batch", flush=True)

    def stop_serving_pooled_features(self) -> None:
        data = self.trainer.datamodule
        if data is not None and hasattr(data, "stop_serving_pooled"):
            data.stop_serving_pooled()  # a later run on this data pools through whatever network it has then

    def on_fit_start(self) -> None:
        self.serve_pooled_features(("train", "val"))

    def on_fit_end(self) -> None:
        self.stop_serving_pooled_features()

    def on_test_start(self) -> None:
        self.serve_pooled_features(("test",))

    def on_test_end(self) -> None:
        self.stop_serving_pooled_features()

    def on_predict_start(self) -> None:
        split = getattr(self.trainer.datamodule, "predict_split", "test")
        self.serve_pooled_features(SPLITS if split == "all" else (split,))

    def on_predict_end(self) -> None:
        self.stop_serving_pooled_features()

    def score(self, batch: dict) -> dict:
        """Features and rewards of both sides of every pair in the batch (pooled features served by the data, or
        pooled here from its hidden states)."""
        if "features" in batch:
            hidden = mask = None
            z = batch["features"]
        else:
            hidden, mask = self.hidden_states(batch)
            z = self.network.features(hidden, mask)
        return self.scored(batch, hidden, mask, self.network.head(z), z=z)

    @staticmethod
    def scored(batch: dict, hidden, mask, rewards: torch.Tensor, **sides: torch.Tensor) -> dict:
        """``score``'s dict: ``rewards`` and ``sides`` (``[2B, ...]``, chosen rows first) split into
        ``chosen_reward``/``rejected_reward`` and ``<name>_chosen``/``<name>_rejected``, with the hidden states, the
        mask and the pair ids."""
        n = rewards.shape[0] // 2
        out = {"hidden": hidden, "mask": mask, "pair": batch["pair"]}
        out["chosen_reward"], out["rejected_reward"] = rewards[:n], rewards[n:]
        for name, value in sides.items():
            out[f"{name}_chosen"], out[f"{name}_rejected"] = value[:n], value[n:]
        return out

    def extra_loss(self, scored: dict) -> tuple[torch.Tensor, dict]:
        """Subclass losses beyond Bradley–Terry (SARM's joint reconstruction)."""
        return scored["chosen_reward"].new_zeros(()), {}

    def _step(self, batch: dict, stage: str) -> dict:
        scored = self.score(batch)
        chosen, rejected = scored["chosen_reward"], scored["rejected_reward"]
        loss = bradley_terry_loss(chosen, rejected, batch.get("margin"))
        logs = {}
        if stage == "train":
            h = self.hparams
            if h.reward_centering:
                loss = loss + h.reward_centering * (chosen + rejected).pow(2).mean()
            if h.head_l1:
                loss = loss + h.head_l1 * self.network.head.weight.abs().sum()
            extra, logs = self.extra_loss(scored)
            loss = loss + extra
            check_finite(
                loss,
                "reward-model loss",
                self.global_step,
                scored["hidden"] if scored["hidden"] is not None else scored["z_chosen"],
            )
        n = chosen.shape[0]
        accuracy, margin = self.metrics[f"{stage}_accuracy"], self.metrics[f"{stage}_margin"]
        correct = (chosen > rejected).float()
        accuracy.update(correct)
        margin.update(chosen - rejected)
        self.reward_stats[f"{stage}_rewards"].update(torch.cat([chosen, rejected]))
        if stage == "test" and self.subsets is not None and "subset" in batch:
            self.subsets.update(correct, batch["subset"])
        self.log_dict(
            {f"{stage}/loss": loss, f"{stage}/accuracy": accuracy, f"{stage}/margin": margin, **logs},
            prog_bar=True,
            batch_size=n,
            on_step=stage == "train",
            on_epoch=True,
        )
        scored["loss"] = loss
        return scored

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._public(self._step(batch, "val"))

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self._public(self._step(batch, "test"))

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return self._public(self.score(batch))

    @staticmethod
    def _public(scored: dict) -> dict:
        """What callbacks (RewardAttribution) read: pair ids, rewards, features."""
        return {
            k: v
            for k, v in scored.items()
            if k in ("pair", "chosen_reward", "rejected_reward", "z_chosen", "z_rejected")
        }

    @property
    def head(self):
        return self.network.head

    # -- epoch ends -------------------------------------------------------------------------------

    def _log_reward_stats(self, stage: str) -> dict:
        stats = self.reward_stats[f"{stage}_rewards"]
        if stats.update_count == 0:
            return {}
        values = stats.compute()
        stats.reset()
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()})
        return values

    def on_train_epoch_end(self) -> None:
        self._log_reward_stats("train")
        # Head sparsity: features that never fire keep their zero-initialized weight exactly.
        weight = self.network.head.weight.detach()
        self.log_dict({"head/nonzero": float(self.network.head.nonzero()), "head/l1": weight.abs().sum()})

    def on_validation_epoch_end(self) -> None:
        values = self._log_reward_stats("val")
        if values and not self.trainer.sanity_checking:
            std = float(values["reward_std"])
            self.reward_norm.copy_(torch.tensor([float(values["reward_mean"]), std if std > 0 else 1.0]))

    def on_test_epoch_end(self) -> None:
        self._log_reward_stats("test")
        if self.subsets is not None and self.subsets.update_count:
            self.log_dict({f"test/subset/{k}": v for k, v in self.subsets.compute().items()})
            self.subsets.reset()

    # -- export -----------------------------------------------------------------------------------

    def export_options(self) -> dict:
        """Keyword arguments of ``save_reward_model`` beyond the shared ones (a subclass's own, e.g. a share)."""
        return {}

    @rank_zero_only
    def on_train_end(self) -> None:
        if self.hparams.export_dir is None:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        save_reward_model(
            Path(self.hparams.export_dir),
            self.network,
            self.backbone_settings,
            self.backbone,
            metrics=metrics,
            reward_norm=self.reward_norm.tolist(),
            mode=self.hparams.mode,
            merge_lora=self.hparams.merge_lora,
            **self.export_options(),
        )
        print(
            f"sarm: reward model written to {self.hparams.export_dir} "
            + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()),
            flush=True,
        )


def _same_model(a: str, b: str) -> bool:
    """Two model names are the same model: equal, the embedded GGUF and the hub id of the model it quantizes
    (as SAELens names it), or two spellings of one local directory."""
    if a == b or hub_id(a) == hub_id(b):
        return True
    return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
