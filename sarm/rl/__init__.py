"""Reward models in RL loops.

samples           a prompt and a completion (plain text or conversational, as TRL holds them) → what RewardModel scores
reward_function   ``SARMRewardFunction``: ``GRPOTrainer(reward_funcs=...)``, logging per-feature reward shares
"""
