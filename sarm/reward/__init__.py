from sarm.reward.head import SparseRewardHead
from sarm.reward.sarm import SARM

__all__ = ["SARM", "SparseRewardHead"]
