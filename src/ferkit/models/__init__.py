"""Model registry and the model families."""

from ferkit.models.registry import ModelMeta, create_model, list_models, register_model

__all__ = ["ModelMeta", "create_model", "list_models", "register_model"]
