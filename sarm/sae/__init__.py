from sarm.sae.base import SAEOutput, SparseAutoencoder, standardize
from sarm.sae.io import load_sae, save_sae
from sarm.sae.jumprelu import JumpReLUSAE
from sarm.sae.matryoshka import MatryoshkaBatchTopKSAE
from sarm.sae.relu import ReLUSAE
from sarm.sae.topk import BatchTopKSAE, TopKSAE

__all__ = [
    "BatchTopKSAE",
    "JumpReLUSAE",
    "MatryoshkaBatchTopKSAE",
    "ReLUSAE",
    "SAEModule",
    "SAEOutput",
    "SparseAutoencoder",
    "TopKSAE",
    "load_sae",
    "save_sae",
    "standardize",
]


def __getattr__(name: str):
    # The Lightning module is imported on first use: readers of SAEs (the reward models) never load it.
    if name == "SAEModule":
        from sarm.sae.module import SAEModule

        return SAEModule
    raise AttributeError(f"module 'sarm.sae' has no attribute {name!r}")
