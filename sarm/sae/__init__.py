from sarm.sae.io import load_sae, save_sae
from sarm.sae.module import SAEModule
from sarm.sae.topk import TopKSAE, standardize

__all__ = ["SAEModule", "TopKSAE", "load_sae", "save_sae", "standardize"]
