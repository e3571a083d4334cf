"""Attribution: a SARM's margins split exactly into per-feature terms, and everything built on them.

contributions   c_i = w_i z_i^chosen − w_i z_i^rejected per pair, per-feature statistics, and the one
                ranking rule: by |mean margin contribution| (``rank_features``, ``RANKING``)
callback        ``RewardAttribution``: the statistics and per-pair terms over a Lightning loop (DDP-exact)
store           the files it writes (tables, per-pair terms of the top features), read back by ``sarm report``
command         ``sarm attribute`` (``attribute``), one restored SARM and one predict pass per dataset
steering        zero, scale or add to features before the head and re-score
recovery        planted-attribute recovery: do the top features detect the attribute that decided?
shares          each feature's share of reward over a set of responses (the TRL logging and the drift monitor's)
"""

from sarm.attribution.callback import RewardAttribution
from sarm.attribution.command import attribute, attribute_dataset, load_sarm
from sarm.attribution.contributions import (
    RANK_COLUMN,
    RANKING,
    FeatureAttributionSums,
    largest_terms,
    margin_contributions,
    rank_features,
)
from sarm.attribution.recovery import collect_pair_features, planted_recovery
from sarm.attribution.steering import steer, steering_effect, zeroing_effect
from sarm.attribution.store import Attribution, read_attribution

__all__ = [
    "RANKING",
    "RANK_COLUMN",
    "Attribution",
    "FeatureAttributionSums",
    "RewardAttribution",
    "attribute",
    "attribute_dataset",
    "collect_pair_features",
    "largest_terms",
    "load_sarm",
    "margin_contributions",
    "planted_recovery",
    "rank_features",
    "read_attribution",
    "steer",
    "steering_effect",
    "zeroing_effect",
]
