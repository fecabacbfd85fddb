"""pvt-hf: the Pyramid Vision Transformer (PVT v1, v2, v2-linear) and its Semantic FPN models for transformers.

Importing the package registers every class with transformers' Auto classes and pipelines.
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
)

from .configuration_pvt import PRESETS, PvtConfig
from .modeling_pvt import PvtBackbone, PvtForImageClassification, PvtModel, PvtPreTrainedModel
from .modeling_pvt_segmentation import PvtForSemanticSegmentation

__version__ = "0.1.0"

AUTO_CLASSES = {
    "AutoModel": PvtModel,
    "AutoModelForImageClassification": PvtForImageClassification,
    "AutoBackbone": PvtBackbone,
    "AutoModelForSemanticSegmentation": PvtForSemanticSegmentation,
}


def _register() -> None:
    AutoConfig.register(PvtConfig.model_type, PvtConfig, exist_ok=True)
    AutoModel.register(PvtConfig, PvtModel, exist_ok=True)
    AutoModelForImageClassification.register(PvtConfig, PvtForImageClassification, exist_ok=True)
    AutoBackbone.register(PvtConfig, PvtBackbone, exist_ok=True)
    AutoModelForSemanticSegmentation.register(PvtConfig, PvtForSemanticSegmentation, exist_ok=True)
    # `save_pretrained` then copies the modeling code and writes `auto_map`, for `trust_remote_code=True`.
    PvtConfig.register_for_auto_class()
    for auto_class, model_class in AUTO_CLASSES.items():
        model_class.register_for_auto_class(auto_class)


_register()

__all__ = [
    "PRESETS",
    "PvtBackbone",
    "PvtConfig",
    "PvtForImageClassification",
    "PvtForSemanticSegmentation",
    "PvtModel",
    "PvtPreTrainedModel",
]
