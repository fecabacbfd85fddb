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
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING

from .configuration_pvt import PRESETS, PvtConfig
from .image_processing_pvt import PvtHfImageProcessor, PvtImageProcessor
from .modeling_pvt import PvtBackbone, PvtForImageClassification, PvtModel, PvtPreTrainedModel
from .modeling_pvt_segmentation import PvtForSemanticSegmentation
from .tools.composites import composite_config, load_pretrained_backbone, pvt_backbone_config
from .tools.flops import count_flops
from .tools.sharding import fully_shard_pvt
from .tools.training_utils import match_gradient_layout


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
    # Our processor under both backend names, so transformers never picks its own, differently cropping
    # `PvtImageProcessor`. The entry also names that old class name (as a string, which transformers uses only to find
    # this entry): folders saved before the rename (`image_processor_type: PvtImageProcessor`) load ours too.
    # Registered on the mapping itself because `AutoImageProcessor.register` first looks our config class up by its
    # name, `PvtConfig`, which is also transformers' PVT config, and so imports transformers' PVT processors (whose
    # torchvision backend warns that torchvision is missing).
    IMAGE_PROCESSOR_MAPPING.register(
        PvtConfig,
        {"pil": PvtImageProcessor, "torchvision": PvtImageProcessor, "legacy": "PvtImageProcessor"},
        exist_ok=True,
    )
    # PVT has no video processor; saying so stops pipelines from looking for a remote one (transformers infers
    # `image_processing_pvt.PvtHfVideoProcessor` from the image processor's auto_map and prompts for trust_remote_code).
    # (`AutoVideoProcessor.register` itself demands torchvision, hence the mapping.)
    VIDEO_PROCESSOR_MAPPING.register(PvtConfig, {"torchvision": None}, exist_ok=True)
    # The image-segmentation pipeline checks models against transformers' name lists only (not the registered
    # classes) and would log our segmentation model as "not supported" although it runs it.
    MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault(PvtConfig.model_type, PvtForSemanticSegmentation.__name__)
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
    "PvtHfImageProcessor",
    "PvtImageProcessor",
    "PvtModel",
    "PvtPreTrainedModel",
    "composite_config",
    "count_flops",
    "fully_shard_pvt",
    "load_pretrained_backbone",
    "match_gradient_layout",
    "pvt_backbone_config",
]
