"""CIFAR ResNets (He et al. 2016, section 4.2) wrapped as Composer classifiers.

The network: a 3x3 conv stem with 16 channels, three stages of ``n`` basic blocks at 16, 32 and
64 channels (the first block of stages 2 and 3 halves the resolution with stride 2), global
average pooling and a linear layer; depth ``6n + 2`` (20, 32, 44, 56, 110, and 8: one block per
stage, the cheap model of ``make demo``).

Shortcuts are the paper's option A for CIFAR: where a block changes shape, the identity is
subsampled with stride 2 and zero-padded in channels, so every shortcut is parameter-free
(ResNet-20 has 0.27M parameters, the paper's figure).

Inputs are normalized inside the model (:class:`InputNormalize`), so the same model takes the
uint8 batches of the training pipeline, the uint8 eval batches (which no algorithm touches) and
the pre-mixed batches (uint8, or float with ``image_dtype="float32"``), and an exported model
carries its preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from composer.loss import soft_cross_entropy
from composer.models import ComposerClassifier
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from cutmix_algo import DenseTargetMetric

__all__ = [
    "DEPTHS",
    "BasicBlock",
    "CifarResNet",
    "InputNormalize",
    "build_model",
    "cifar_resnet",
]

DEPTHS = {"resnet8": 8, "resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}


class InputNormalize(nn.Module):
    """Per-channel ``(x - mean) / std`` for images in ``[0, 1]``; uint8 images are scaled first.

    Args:
        mean: per-channel means of images in ``[0, 1]``.
        std: per-channel standard deviations, likewise.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            # One fused affine map instead of /255 then normalize: a single pass over the batch.
            return (x.float() - self.mean * 255.0) / (self.std * 255.0)
        return (x.float() - self.mean) / self.std


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an option-A (parameter-free) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.extra_channels = planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            half = self.extra_channels // 2
            x = F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of depth ``6n + 2``: stem, 3 stages of ``n`` blocks, pooling, fc.

    Args:
        blocks_per_stage: ``n``.
        num_classes: outputs of the final linear layer.
        in_channels: image channels.
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He et al. initialize with their own (Kaiming) normal init; BN starts as the identity.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def cifar_resnet(name: str, num_classes: int = 10) -> CifarResNet:
    """Build ``resnet8``, ``resnet20`` … ``resnet110`` by name.

    Raises:
        ValueError: if ``name`` is not one of :data:`DEPTHS`.
    """
    if name not in DEPTHS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(DEPTHS)}")
    return CifarResNet((DEPTHS[name] - 2) // 6, num_classes)


def build_model(
    name: str,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> ComposerClassifier:
    """A CIFAR ResNet behind input normalization, as a Composer classifier.

    The loss is :func:`composer.loss.soft_cross_entropy`, which takes int labels ``(N,)`` and
    dense ``(N, K)`` rows alike. Training accuracy is wrapped in
    :class:`cutmix_algo.DenseTargetMetric`, so it also accepts dense targets (CutMix's output,
    pre-mixed shards) by scoring the dominant class.

    Example:
        >>> model = build_model("resnet20", 10, (0.5,) * 3, (0.25,) * 3)
        >>> model(( torch.zeros(2, 3, 32, 32, dtype=torch.uint8), None)).shape
        torch.Size([2, 10])
    """
    module = nn.Sequential(InputNormalize(mean, std), cifar_resnet(name, num_classes))
    train_metrics = MetricCollection(
        {"MulticlassAccuracy": DenseTargetMetric(MulticlassAccuracy(num_classes, average="micro"))}
    )
    return ComposerClassifier(
        module,
        num_classes=num_classes,
        train_metrics=train_metrics,
        loss_fn=soft_cross_entropy,
    )
