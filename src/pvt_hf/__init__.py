"""pvt-hf: the Pyramid Vision Transformer (PVT v1, v2, v2-linear) and its Semantic FPN models for transformers.

Importing the package registers every class with transformers' Auto classes and pipelines.
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
)
from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING
from transformers.utils import logging as transformers_logging

from .configuration_pvt import PRESETS, PvtConfig
from .image_processing_pvt import PvtImageProcessor
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
    # One class serves both backends transformers may ask for (it needs no torchvision). Registering makes
    # transformers resolve its own `pvt` processor, which warns about torchvision: irrelevant here, so silenced.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        AutoImageProcessor.register(
            PvtConfig, image_processor_classes={"pil": PvtImageProcessor, "torchvision": PvtImageProcessor}, exist_ok=True
        )
    finally:
        transformers_logging.set_verbosity(verbosity)
    # PVT has no video processor; saying so stops pipelines from looking for a remote one (which would prompt
    # for trust_remote_code, inferring `PvtVideoProcessor` from the image processor's auto_map).
    # (`AutoVideoProcessor.register` itself demands torchvision, hence the mapping.)
    VIDEO_PROCESSOR_MAPPING.register(PvtConfig, {"torchvision": None}, exist_ok=True)
    PvtImageProcessor.register_for_auto_class("AutoImageProcessor")
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
    "PvtImageProcessor",
    "PvtModel",
    "PvtPreTrainedModel",
]
