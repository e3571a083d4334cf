from sarm.reward.dense import DenseRM
from sarm.reward.head import RewardHead
from sarm.reward.network import DenseNetwork, RewardNetwork, SARMNetwork
from sarm.reward.residual_sarm import ResidualSARM
from sarm.reward.sarm import SARM

__all__ = ["SARM", "ResidualSARM", "DenseNetwork", "DenseRM", "RewardHead", "RewardNetwork", "SARMNetwork"]
