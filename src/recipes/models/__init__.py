"""Model definitions for the native backend."""

from recipes.models.llama import Llama, num_params

__all__ = ["Llama", "num_params"]
