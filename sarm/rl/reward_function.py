"""An exported reward model as an in-process reward function for TRL's ``GRPOTrainer(reward_funcs=...)``.

    from sarm.rl.reward_function import SARMRewardFunction
    reward = SARMRewardFunction("runs/demo/sarm/export")        # loaded once
    trainer = GRPOTrainer(model=policy, reward_funcs=reward, train_dataset=prompts, args=GRPOConfig(...))

TRL calls a reward function as ``f(prompts=..., completions=..., completion_ids=..., **columns)`` and expects one
float per completion (``GRPOTrainer._calculate_rewards``); it logs their mean and std as ``rewards/<name>/mean`` and
``rewards/<name>/std``, where ``<name>`` is the function's ``__name__`` (here ``name``, default ``sarm``). The
function is deliberately not an ``nn.Module``: TRL would take a module for a Hugging Face sequence classifier,
tokenize the texts itself and read ``.logits``. Prompts and completions may be plain text or conversational
(``sarm.rl.samples``); each reward is ``RewardModel.score``'s, the number ``sarm score`` writes for the same
prompt and response.

Every call also logs, through TRL's ``log_metric`` hook (averaged over each logging step like TRL's own metrics),
the share of reward carried by features (``sarm.attribution.shares``: Σ_s t_{s,i} / Σ_s m_s over the batch's
completions): ``sarm_shares/f<i>`` for the ``log_features`` features with the largest |share| in the batch and
for every feature in ``watch`` (say the detectors of a distractor such as length), and ``sarm_shares/residual``
for a residualized SARM. Their running totals over the whole run are kept as well (``shares()``), to compare with
the reference data as ``sarm drift`` does. With ``log_top_feature``, the completions table (TRL's ``log_extra``)
gets each completion's largest feature term.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from sarm.attribution.shares import absolute_mass, residual_share, reward_shares
from sarm.data.rows import RowError
from sarm.errors import SarmInputError
from sarm.reward.inference import RewardModel
from sarm.rl.samples import prompt_and_response

SHARE_PREFIX = "sarm_shares/"


class SARMRewardFunction:
    """``(prompts, completions, **kwargs) -> list[float]``: the rewards of an exported reward model.

    Args:
        model: the export directory (``sarm.json``), or a ``RewardModel`` already loaded.
        name: the function's ``__name__``, which TRL uses in its log keys (``rewards/<name>/mean``).
        normalize: return rewards normalized with the validation statistics stored in the export.
        batch_size: sequences per forward pass of the reward model.
        device: where to load the model (``cpu``, ``cuda``); ignored for a loaded model.
        log_features: how many features with the largest |share| each batch logs (0: none).
        watch: features whose share is logged at every call, whether large or not.
        log_top_feature: add each completion's largest feature term to TRL's completions table.
    """

    def __init__(
        self,
        model: str | Path | RewardModel,
        name: str = "sarm",
        normalize: bool = False,
        batch_size: int = 8,
        device: str = "cpu",
        log_features: int = 8,
        watch: Sequence[int] = (),
        log_top_feature: bool = False,
    ):
        self.model = model if isinstance(model, RewardModel) else RewardModel.load(model, device=device)
        self.__name__ = name
        self.normalize, self.batch_size, self.log_features = normalize, batch_size, log_features
        self.log_top_feature = log_top_feature
        width = self.model.feature_head.weight.numel()
        bad = [i for i in watch if not 0 <= int(i) < width]
        if bad:
            raise SarmInputError(f"watch: features {bad} out of range (the model has {width} features)")
        self.watch = [int(i) for i in watch]
        # Running sums over every completion scored (the numerator and denominator of reward_shares).
        self.term_sums = torch.zeros(width, dtype=torch.float64)
        self.residual_sum = 0.0
        self.mass_sum = 0.0
        self.completions_scored = 0

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float]:
        samples = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            try:
                samples.append(prompt_and_response(prompt, completion))
            except RowError as err:
                raise SarmInputError(f"{self.__name__}: completion {i}: field '{err.field}': {err.reason}") from None
        scores = self.model.score([p for p, _ in samples], [r for _, r in samples], self.batch_size)
        with torch.no_grad():  # the head's weights require grad; nothing here is differentiated
            terms = self.model.feature_head.contributions(scores.features.to(self.model.device)).double().cpu()
        self._log(terms, scores.residual, kwargs.get("log_metric"), kwargs.get("log_extra"))
        rewards = self.model.normalize(scores.rewards) if self.normalize else scores.rewards
        return rewards.tolist()

    def _log(self, terms: torch.Tensor, residual: torch.Tensor | None, log_metric, log_extra) -> None:
        self.term_sums += terms.sum(0)
        self.mass_sum += float(absolute_mass(terms, None if residual is None else residual.double()).sum())
        self.residual_sum += 0.0 if residual is None else float(residual.double().sum())
        self.completions_scored += terms.shape[0]
        if log_metric is not None:
            shares = reward_shares(terms, residual)
            largest = shares.abs().topk(min(self.log_features, shares.numel())).indices.tolist()
            for i in sorted(set(largest) | set(self.watch)):
                log_metric(f"{SHARE_PREFIX}f{i}", float(shares[i]))
            if residual is not None:
                log_metric(f"{SHARE_PREFIX}residual", residual_share(terms, residual))
        if log_extra is not None and self.log_top_feature:
            top = terms.abs().argmax(-1)
            log_extra("sarm_top_feature", [f"f{int(i)}: {float(t[i]):+.3f}" for i, t in zip(top, terms)])

    def shares(self) -> torch.Tensor:
        """Each feature's share of reward over every completion scored so far, ``[F]`` (``reward_shares`` of all
        of them at once: the ratio of the running sums)."""
        if self.mass_sum <= 0:
            return torch.zeros_like(self.term_sums)
        return self.term_sums / self.mass_sum
