"""The CIFAR ResNets: size, structure, option-A shortcuts, input normalization, dense-target loss."""

from __future__ import annotations

import pytest
import torch

from cutmix_train.models import DEPTHS, BasicBlock, InputNormalize, build_model, cifar_resnet


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet20_has_the_papers_027m_parameters() -> None:
    assert 0.26e6 < _params(cifar_resnet("resnet20")) < 0.28e6


@pytest.mark.parametrize("name", list(DEPTHS))
def test_depth_is_three_stages_of_n_blocks(name: str) -> None:
    n = (DEPTHS[name] - 2) // 6
    model = cifar_resnet(name)
    stages = [model.layer1, model.layer2, model.layer3]
    assert [len(s) for s in stages] == [n, n, n]
    assert [s[0].conv1.out_channels for s in stages] == [16, 32, 64]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == DEPTHS[name]  # option A adds no projection convs


def test_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="resnet21"):
        cifar_resnet("resnet21")


def test_output_shape_and_downsampling_shortcut() -> None:
    model = cifar_resnet("resnet20").eval()
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 10)
    block = BasicBlock(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (2, 32, 4, 4)
    assert torch.equal(shortcut[:, 8:24], x[:, :, ::2, ::2])  # identity, zero-padded in channels
    assert shortcut[:, :8].abs().sum() == 0 and shortcut[:, 24:].abs().sum() == 0


def test_uint8_and_unit_float_inputs_normalize_alike() -> None:
    norm = InputNormalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    torch.testing.assert_close(norm(x), norm(x.float() / 255), rtol=1e-5, atol=1e-5)


def test_classifier_loss_takes_int_and_dense_targets() -> None:
    model = build_model("resnet20", 10, (0.5,) * 3, (0.25,) * 3)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([1, 2, 3, 4])
    outputs = model((x, labels))
    assert outputs.shape == (4, 10)
    int_loss = model.loss(outputs, (x, labels))
    dense_loss = model.loss(outputs, (x, torch.nn.functional.one_hot(labels, 10).float()))
    torch.testing.assert_close(int_loss, dense_loss)
    metric = model.get_metrics(is_train=True)["MulticlassAccuracy"]
    metric.update(outputs, torch.full((4, 10), 0.1))  # dense targets are accepted in training


@pytest.mark.parametrize("size", [8, 16, 32])
def test_resnet8_is_one_block_per_stage_at_every_digits_size(size: int) -> None:
    model = cifar_resnet("resnet8").eval()
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [1, 1, 1]
    assert 0.07e6 < _params(model) < 0.08e6  # a quarter of ResNet-20's
    assert model(torch.randn(2, 3, size, size)).shape == (2, 10)
