"""The activation cache, the pivot of the pipeline: text → backbone → **cache** → SAE → reward.

``settings`` (what a cache holds and its fingerprint), ``layout`` (the files, and who may write them),
``sequences`` (what the backbone runs over, in batches of nearly equal
length), ``writer`` (``sarm cache``), ``reader`` (``ActivationCache``) and ``datamodules`` (the cache as
training data for SAEs and SARM heads).
"""

from sarm.cache.datamodules import PairActivationDataModule, TokenActivationDataModule
from sarm.cache.reader import ActivationCache
from sarm.cache.settings import CacheSettings
from sarm.cache.writer import cache_activations

__all__ = [
    "ActivationCache",
    "CacheSettings",
    "PairActivationDataModule",
    "TokenActivationDataModule",
    "cache_activations",
]
