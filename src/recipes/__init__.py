"""Llama 3.1 pretraining benchmark recipes: Hydra configs composed into a Lightning Trainer."""

__version__ = "0.1.0"
