from sarm.sae.base import SAEOutput, SparseAutoencoder, standardize
from sarm.sae.io import load_sae, save_sae
from sarm.sae.module import SAEModule
from sarm.sae.relu import ReLUSAE
from sarm.sae.topk import BatchTopKSAE, TopKSAE

__all__ = ["BatchTopKSAE", "ReLUSAE", "SAEModule", "SAEOutput", "SparseAutoencoder", "TopKSAE", "load_sae", "save_sae",
           "standardize"]
