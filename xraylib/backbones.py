"""The backbone registry: each backbone's name and metadata, keyworded; no TensorFlow (models.py builds them).

Adding a backbone is one `Backbone(...)` entry here: the model factory (`models.build_model`), the preprocessing
layer (`layers.BackbonePreprocess`), the presets and the reports all read it from this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xraylib.errors import InputError


@dataclass(frozen=True)
class Backbone:
    """One entry of the registry."""

    name: str  # what users type: --backbone NAME
    application: str = ""  # constructor in keras.applications; "" for the study's self-defined ResNet-34
    preprocessing: str = ""  # keras.applications submodule whose preprocess_input feeds it; "" = scale to [-1, 1]
    min_size: int = 32  # smallest input the architecture accepts, in pixels
    default_size: int = 150  # the study's input size
    batch_size: int = 64  # the study's batch size
    weights_file: str = ""  # Keras' ImageNet no-top weights file (in ~/.keras/models); "" = no ImageNet weights
    weights_md5: str = ""  # Keras' md5 of that file, the hash its download is checked against
    study_recipe: dict = field(default_factory=dict)  # how the study's recipe differed for this backbone
    study_result: tuple[float, float] | None = None  # the study's published test accuracy and weighted F1


BACKBONES: dict[str, Backbone] = {
    bb.name: bb
    for bb in [
        Backbone(
            name="xception",
            application="Xception",
            preprocessing="xception",
            min_size=71,
            weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_md5="b0042744bf5b25fce3cb969f33bebb97",
            study_result=(0.9135, 0.9110),
        ),
        Backbone(
            name="vgg16",
            application="VGG16",
            preprocessing="vgg16",
            weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_md5="6d6bbae143d832006294945121d1f1fc",
            study_result=(0.9183, 0.9162),
        ),
        Backbone(
            name="vgg19",
            application="VGG19",
            preprocessing="vgg19",
            weights_file="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_md5="253f8cb515780f3b799900260a226db6",
            study_result=(0.9455, 0.9447),
        ),
        Backbone(
            name="resnet101v2",
            application="ResNet101V2",
            preprocessing="resnet_v2",
            weights_file="resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_md5="c0ed64b8031c3730f411d2eb4eea35b5",
            study_result=(0.9054, 0.9029),
        ),
        Backbone(
            name="inceptionv3",
            application="InceptionV3",
            preprocessing="inception_v3",
            min_size=75,
            weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_md5="bcbd6486424b2319ff4ef7d526e38f63",
            study_result=(0.9151, 0.9129),
        ),
        Backbone(
            name="inceptionresnetv2",
            application="InceptionResNetV2",
            preprocessing="inception_resnet_v2",
            min_size=75,
            weights_file="inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_md5="d19885ff4a710c122648d3b5c3b684e4",
            study_result=(0.9247, 0.9228),
        ),
        Backbone(
            name="efficientnetv2s",
            application="EfficientNetV2S",
            preprocessing="efficientnet_v2",
            batch_size=16,
            weights_file="efficientnetv2-s_notop.h5",
            weights_md5="af0682fb74e8c54910f2d4393339c070",
            study_result=(0.9071, 0.9043),
        ),
        Backbone(
            name="efficientnetv2m",
            application="EfficientNetV2M",
            preprocessing="efficientnet_v2",
            batch_size=16,
            weights_file="efficientnetv2-m_notop.h5",
            weights_md5="1b8dc055df72dde80d614482840fe342",
            study_result=(0.9231, 0.9213),
        ),
        Backbone(
            name="resnet34",  # trained from scratch; Adam, and its best val_accuracy checkpoint kept
            study_recipe={"optimizer": "adam", "keep": "best", "monitor": "val_accuracy"},
            study_result=(0.9343, 0.9339),
        ),
    ]
}


def get_backbone(name: str) -> Backbone:
    """Look a backbone up by name, with a one-line error listing the known names."""
    try:
        return BACKBONES[name.lower()]
    except KeyError:
        raise InputError(f"unknown backbone {name!r} (known: {', '.join(BACKBONES)})") from None


def resolve_backbones(spec: str) -> list[str]:
    """`all` or a comma-separated list of backbone names -> validated names, in registry order for `all`."""
    if spec.strip().lower() == "all":
        return list(BACKBONES)
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if not names:
        raise InputError("no backbone given (use 'all' or names separated by commas)")
    return [get_backbone(n).name for n in names]
