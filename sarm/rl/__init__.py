"""Reward models in RL loops.

samples           a prompt and a completion (plain text or conversational, as TRL holds them) → what RewardModel scores
reward_function   ``SARMRewardFunction``: ``GRPOTrainer(reward_funcs=...)``, logging per-feature reward shares
rerank            ``sarm rerank``: best of n candidates per prompt, the margin over the runner-up split into features
drift             the drift statistic: per-feature share on samples against a reference, cluster-bootstrap flags
monitor           ``sarm drift``: a reference and a samples file through the RM → drift table (JSON) and plot (PNG)
"""
