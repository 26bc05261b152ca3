"""The backbone registry, the study's self-defined ResNet-34, and the model factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xraylib.errors import InputError


@dataclass(frozen=True)
class Backbone:
    """One entry of the registry: how to build a backbone and feed it."""

    name: str
    title: str
    module: str  # keras.applications submodule holding `preprocess_input`, or "" for the self-defined CNN
    constructor: str  # attribute of keras.applications, or "" for the self-defined CNN
    min_size: int
    batch_size: int = 64
    default_size: int = 150

    def build(self) -> Callable:
        """The constructor: called as constructor(include_top=False, weights=..., input_tensor=..., pooling=...)."""
        if not self.constructor:
            return resnet34
        import keras

        return getattr(keras.applications, self.constructor)

    def preprocess(self) -> Callable:
        """The backbone's own `preprocess_input` (identity for the self-defined CNN)."""
        if not self.module:
            return lambda x: x / 127.5 - 1.0
        import importlib

        return importlib.import_module(f"keras.applications.{self.module}").preprocess_input


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone("xception", "Xception", "xception", "Xception", 71),
        Backbone("vgg16", "VGG16", "vgg16", "VGG16", 32),
        Backbone("vgg19", "VGG19", "vgg19", "VGG19", 32),
        Backbone("resnet101v2", "ResNet101V2", "resnet_v2", "ResNet101V2", 32),
        Backbone("inceptionv3", "InceptionV3", "inception_v3", "InceptionV3", 75),
        Backbone("inceptionresnetv2", "InceptionResNetV2", "inception_resnet_v2", "InceptionResNetV2", 75),
        Backbone("efficientnetv2s", "EfficientNetV2S", "efficientnet_v2", "EfficientNetV2S", 32, batch_size=16),
        Backbone("efficientnetv2m", "EfficientNetV2M", "efficientnet_v2", "EfficientNetV2M", 32, batch_size=16),
        Backbone("resnet34", "Self-defined ResNet-34", "", "", 32),
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


def resnet34(*args, **kwargs):
    """Placeholder replaced by the self-defined ResNet-34 builder."""
    raise NotImplementedError
