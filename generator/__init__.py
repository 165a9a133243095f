"""SAE Atlas: a static site generator for sparse autoencoder releases."""

__version__ = "0.1.0"
