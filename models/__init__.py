"""Model construction: timm by name plus the recipe details of the GSAM paper (no data, no optimizer)."""
from .build import build_model, model_data_config

__all__ = ["build_model", "model_data_config"]
