"""What a ``sarm report`` holds: the typed content ``sarm.report.build`` produces and ``sarm.report.html`` renders.

``report.json`` is ``dataclasses.asdict`` of a :class:`Report`. Every field is required and always filled
by the builder, except the few marked ``| None`` (each says when it is None). Numbers are plain Python
floats and ints, never tensors; a margin is always chosen − rejected reward.

Explanations and contexts are the explainer's own types (``sarm.explain``), stored as they come.
"""

from __future__ import annotations

from dataclasses import dataclass

from sarm.explain.contexts import Context
from sarm.explain.store import Explanation


@dataclass
class Model:
    """The SARM the report is about, from its ``sarm.json``."""

    path: str  # the exported SARM's directory
    kind: str  # reward model kind: "sarm" or "residual_sarm" (a dense model has no features to report on)
    backbone: dict  # the backbone settings of sarm.json ("model", "layer", ...), as written there
    n_features: int  # SAE latents, i.e. head weights
    head_nonzero: int | None  # non-zero head weights; None for an export that did not record it
    pooling: str  # how token features become a response's features


@dataclass
class TopFeature:
    """One of a dataset's top features (ranked by |mean margin contribution| over its pairs)."""

    feature: int
    weight: float  # its head weight w_i
    contributions: list[float]  # its margin contribution w_i (z_i^c − z_i^r), one per pair of the dataset
    # The attribution table's statistics (sarm.callbacks.attribution). All None for a feature that never fires
    # on the dataset: the table lists active features only, and a short ranking can reach inactive ones.
    mean_margin_contribution: float | None = None
    mean_chosen_contribution: float | None = None
    mean_rejected_contribution: float | None = None
    freq_chosen: float | None = None  # share of chosen responses where it is active
    freq_rejected: float | None = None
    sign_agreement: float | None = None  # share of pairs where its margin term has the margin's sign
    margin_share: float | None = None  # its mean margin contribution / the mean margin


@dataclass
class Term:
    """One feature's term in one pair's margin."""

    feature: int
    value: float


@dataclass
class Pair:
    """A pair shown with its margin's waterfall (most confident, least confident or misranked)."""

    pair: int  # the pair's index in the dataset
    label: str  # why it was picked: "most confident", "second most confident", "misranked", "least confident"
    prompt: str  # the conversation before the responses, one "role: content" paragraph per message
    chosen: str
    rejected: str
    chosen_reward: float
    rejected_reward: float
    contributions: list[Term]  # the (up to 8) largest non-zero terms of the margin, largest |value| first
    residual: float | None = None  # a residualized SARM's residual term of the margin; None for a SARM (it has none)

    @property
    def margin(self) -> float:
        return self.chosen_reward - self.rejected_reward

    @property
    def other(self) -> float:
        """The margin's remainder: the sum of every feature not listed in ``contributions`` (the residual apart)."""
        return self.margin - sum(t.value for t in self.contributions) - (self.residual or 0.0)


@dataclass
class Steering:
    """Accuracy and mean margin of a dataset's pairs before and after one feature is zeroed (sarm.steer)."""

    feature: int  # the steered feature
    features: list[int]  # all steered features (here always [feature])
    operation: str  # "zero"
    value: float  # the operation's value (unused by "zero")
    pairs: int
    accuracy_before: float
    accuracy: float  # after steering
    mean_margin_before: float
    mean_margin: float  # after steering


@dataclass
class Legibility:
    """Accuracy against the number of features kept (``sarm.attribution.legibility.legibility_curve``): the train
    split's top-m features by the one ranking rule, on this dataset's split."""

    split: str  # the split scored (val or test); the ranking and the refits read train only
    ms: list[str]  # the curve's m's, "all" last
    accuracy: dict[str, float]  # m → accuracy with only the top-m features' terms kept (the head's own weights)
    refit_accuracy: dict[str, float]  # m → accuracy of a head refit on the top-m features alone (train split)
    share: dict[str, float]  # m → mean share of a pair's |terms| its own m largest carry (numeric m only)
    dense_accuracy: float | None  # the converged dense head on the same pooling; None when there is no val split
    n_features: int  # what "all" stands for on the m axis


@dataclass
class Dataset:
    """One preference dataset's split, through the SARM."""

    name: str  # unique within the report (file stem, numbered when two share one)
    n_pairs: int
    accuracy: float  # share of pairs with a positive margin
    mean_margin: float
    chosen_rewards: list[float]  # one per pair, in the order of ``rejected_rewards`` and each contribution list
    rejected_rewards: list[float]
    subsets: dict[str, float]  # accuracy per subset (from the data's metadata), for subsets with pairs here
    features: list[TopFeature]  # the top features, ranked
    pairs: list[Pair]  # the pairs with waterfalls
    steering: list[Steering]  # one row per zeroed top feature, in rank order
    legibility: Legibility | None  # None for the train split, a cache without a train split, a residualized SARM
    feature_share: float | None = None  # a residualized SARM's share of the |margins| its features carry; else None


@dataclass
class FeaturePage:
    """A feature's own section: every top feature of any dataset has one."""

    feature: int
    weight: float
    explanation: Explanation  # explained on the first dataset's cache
    contexts: list[Context]  # its top-activating contexts, strongest first


@dataclass
class FeatureMap:
    """The feature pages' features on a plane: their unit decoder directions' first two principal components."""

    features: list[int]
    x: list[float]
    y: list[float]
    margin_contribution: list[float]  # mean margin contribution on the first dataset (0 where not in its top)
    method: str  # how the plane was found, for the caption


@dataclass
class ComparisonRow:
    feature: int
    a: float  # mean margin contribution on dataset a
    b: float  # ... on dataset b
    difference: float  # a − b


@dataclass
class Comparison:
    """Which features matter more on one dataset than on the other."""

    a: str  # the first dataset's name
    b: str
    rows: list[ComparisonRow]  # one per feature page, largest |difference| first


@dataclass
class Report:
    title: str
    model: Model
    datasets: list[Dataset]  # one or two
    feature_pages: list[FeaturePage]  # the datasets' top features, each once, in rank order, first dataset first
    feature_map: FeatureMap | None  # None with fewer than 3 feature pages (no plane to speak of)
    comparison: Comparison | None  # None unless there are two datasets
