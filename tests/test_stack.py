"""The pinned stack imports together and a real Composer Trainer fits on the CPU."""

from __future__ import annotations

import importlib.metadata

import torch
from torch.utils.data import DataLoader, TensorDataset


def test_pinned_versions_import_together() -> None:
    import composer
    import streaming
    import torchvision

    import cutmix_algo
    import writer

    assert importlib.metadata.version("mosaicml") == "0.32.1"
    assert importlib.metadata.version("mosaicml-streaming") == "0.13.0"
    assert torch.__version__.startswith("2.7.0")
    assert torchvision.__version__.startswith("0.22.0")
    assert composer.__version__ == "0.32.1"
    assert streaming.__version__ == "0.13.0"
    assert callable(cutmix_algo.cutmix_batch) and writer is not None


def test_two_batch_trainer_fit_on_cpu() -> None:
    from composer import Trainer
    from composer.models import ComposerClassifier

    torch.manual_seed(0)
    data = TensorDataset(torch.rand(16, 3, 8, 8), torch.randint(0, 3, (16,)))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    before = [p.detach().clone() for p in net.parameters()]
    trainer = Trainer(
        model=ComposerClassifier(net, num_classes=3),
        train_dataloader=DataLoader(data, batch_size=8),
        max_duration="2ba",
        optimizers=torch.optim.SGD(net.parameters(), lr=0.1),
        device="cpu",
        progress_bar=False,
    )
    trainer.fit()
    assert int(trainer.state.timestamp.batch) == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=False))


def test_functional_api_imports_without_composer() -> None:
    # Composer's import is slow and swaps signal handlers: the writer's workers must not pay it.
    import subprocess
    import sys

    code = "import sys, cutmix_algo; cutmix_algo.cutmix_batch; print('composer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    code = "import sys, cutmix_algo; cutmix_algo.CutMix; print('composer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
