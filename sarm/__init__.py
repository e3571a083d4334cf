"""sarm: interpretable reward models with sparse autoencoders."""

__version__ = "0.1.0"
