"""The device path run on PyTorch's ``meta`` device: it never reads a device tensor on the host.

On CUDA, reading a device tensor's values on the host (``.item()``, ``.tolist()``, ``bool(t)``,
``.cpu()``, ``torch.equal``, ``nonzero`` and the like) waits for the device: a host-device sync.
A ``meta`` tensor has a shape, dtype and layout but no data, and each of those reads raises on
it (:func:`test_meta_refuses_every_host_read`). Our code picks its paths by
``device.type == "cpu"`` alone (:func:`test_paths_branch_on_cpu_alone`), so a meta batch takes
exactly the branches a CUDA batch takes. Running them on meta therefore shows on any machine,
this CPU-only one included, that the device path reads nothing back: a sync-free path needs
that, though it is not all it needs. The numbers are checked elsewhere: the CPU tests check the
same ops, and ``tests/*`` marked "needs a CUDA device" check CUDA against the CPU under
``torch.cuda.set_sync_debug_mode("error")`` when a GPU is there.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
import torch
from composer import Trainer
from composer.core import Event
from composer.devices import DeviceCPU
from composer.models import ComposerClassifier
from torch.utils.data import DataLoader, TensorDataset

from cutmix_algo import CutMix, cutmix_batch, derive_generator
from cutmix_algo.functional import mixup_, paste_box_hwc_, paste_boxes_, paste_boxes_hwc_
from cutmix_algo.paste import METHODS, permute_batch_
from cutmix_train.augment import DeviceAugment, augment_before_mixing, random_crop_flip
from cutmix_train.models import InputNormalize

META = torch.device("meta")
ROOT = Path(__file__).resolve().parents[1]
N, C, H, W, K = 8, 3, 24, 40, 10


def _meta_batch(dtype: torch.dtype, layout: str = "contiguous", shape=(N, C, H, W)) -> torch.Tensor:
    x = torch.empty(shape, dtype=dtype, device=META)
    return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x


def test_meta_refuses_every_host_read() -> None:
    """The premise: each way of reading a tensor's values on the host raises for a meta tensor."""
    t = torch.empty(4, device=META)
    reads = {
        "item": lambda: t.sum().item(),
        "bool": lambda: bool(t.sum()),
        "int": lambda: int(t[0]),
        "tolist": t.tolist,
        "cpu": t.cpu,
        "numpy": t.numpy,
        "equal": lambda: torch.equal(t, t),
        "nonzero": t.nonzero,
        "mask": lambda: t[t > 0],
        "unique": lambda: torch.unique(t),
    }
    for name, read in reads.items():
        with pytest.raises((RuntimeError, NotImplementedError, TypeError)):
            read()
            pytest.fail(f"{name} read a meta tensor")


def _code_of(path: Path) -> list[ast.AST]:
    return list(ast.walk(ast.parse(path.read_text(), filename=str(path))))


def test_paths_branch_on_cpu_alone() -> None:
    """No branch singles out CUDA (or any device but the CPU), so meta goes where CUDA goes."""
    files = sorted((ROOT / "cutmix_algo").glob("*.py")) + [
        ROOT / "cutmix_train" / "augment.py", ROOT / "cutmix_train" / "models.py"]
    compared = 0
    for path in files:
        for node in _code_of(path):
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("is_cuda", "is_mps", "is_xpu"), f"{path.name}: .{node.attr}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in ("cuda", "mps", "xpu"), f"{path.name}: {node.value!r}"
            if isinstance(node, ast.Compare) and any(
                isinstance(side, ast.Attribute) and side.attr == "type"
                for side in [node.left, *node.comparators]
            ):
                compared += 1
                literals = [side.value for side in [node.left, *node.comparators]
                            if isinstance(side, ast.Constant)]
                assert literals == ["cpu"], f"{path.name}:{node.lineno} compares a device type to {literals}"
    assert compared >= 5  # the checks above looked at the real branches


# ----------------------------------------------------------------------------------------------
# The functional API.


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("mode", ["batch", "sample"])
@pytest.mark.parametrize("target", ["labels", "dense", "map", None])
def test_cutmix_batch_reads_nothing_back(dtype, layout, mode, target) -> None:
    x = _meta_batch(dtype, layout)
    y = {
        "labels": torch.empty(N, dtype=torch.int64, device=META),
        "dense": torch.empty(N, K, device=META),
        "map": torch.empty(N, H, W, dtype=torch.int64, device=META),
        None: None,
    }[target]
    out = cutmix_batch(x, y, num_classes=K, mode=mode, generator=derive_generator(1))
    assert out.input is x and x.is_contiguous(
        memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    if target is None:
        assert out.target is None
    elif target == "map":
        assert out.target.device == META and out.target.shape == (N, H, W)
    else:
        assert out.target.device == META and out.target.shape == (N, K)
        assert out.target.dtype == torch.float32
    assert out.perm.device == META  # moved without blocking, for indexing on the device
    # λ and the boxes stay on the host, where they were drawn: reading them costs no sync.
    assert not isinstance(out.lam, torch.Tensor) or out.lam.device.type == "cpu"
    assert not isinstance(out.box, torch.Tensor) or out.box.device.type == "cpu"


def test_given_box_and_a_device_perm_read_nothing_back() -> None:
    x = _meta_batch(torch.float32)
    perm = torch.empty(N, dtype=torch.int64, device=META)
    out = cutmix_batch(x, torch.empty(N, K, device=META), box=(2, 3, 20, 30), perm=perm)
    assert out.input is x and out.target.device == META
    assert out.lam == pytest.approx(1 - 18 * 27 / (H * W), abs=1e-6)  # from the box, on the host


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("perm_on", ["cpu", "meta"])
@pytest.mark.parametrize("side", [8, 112])  # small regions and ones the CPU's cycle walk takes
def test_permute_batch_reads_nothing_back(method, perm_on, side) -> None:
    region = _meta_batch(torch.float32, shape=(N, C, 128, 128))[..., :side, :side]
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(0)).to(perm_on)
    assert permute_batch_(region, perm, method=method) is region


def test_hwc_and_per_row_pastes_read_nothing_back() -> None:
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0, 0, 20, 30]] * N)
    hwc = torch.empty(N, 64, 64, C, dtype=torch.uint8, device=META)
    assert paste_box_hwc_(hwc, (1, 2, 60, 50), perm) is hwc
    assert paste_boxes_hwc_(hwc, boxes, perm) is hwc
    nchw = _meta_batch(torch.float32, shape=(N, C, 128, 128))  # large: the CPU would use numpy
    assert paste_boxes_(nchw, boxes * 4, perm.to(META)) is nchw


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_mixup_reads_nothing_back(dtype) -> None:
    x = _meta_batch(dtype)
    assert mixup_(x, 0.3, torch.randperm(N).to(META)) is x


def test_device_augment_and_normalize_read_nothing_back() -> None:
    x = _meta_batch(torch.uint8)
    out = random_crop_flip(x, 4, True, torch.Generator().manual_seed(0))
    assert out.device == META and out.shape == x.shape and out.dtype == torch.uint8
    normalize = InputNormalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).to(META)  # as the trainer would
    normalized = normalize(out)
    assert normalized.device == META and normalized.dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# The Composer Algorithm, on a real Trainer's State and Engine.


class MetaDevice(DeviceCPU):
    """The CPU device, except that every batch tensor it is handed goes to ``meta``."""

    def tensor_to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(META)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2 * N, C, H, W), dtype=torch.uint8, generator=g)
    return DataLoader(TensorDataset(images, torch.randint(0, K, (2 * N,), generator=g)), batch_size=N)


@pytest.mark.parametrize("options", [
    {},
    {"mode": "sample"},
    {"mixup_alpha": 1.0, "switch_prob": 1.0},
    {"p": 0.0},
    {"interpolate_loss": True},
    {"inplace": False},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("augment", [False, True])
def test_algorithm_reads_nothing_back(options, augment) -> None:
    """AFTER_DATALOADER (and AFTER_LOSS) through the Engine, the batch moved by the trainer's device."""
    loader = _loader()
    algorithms = [CutMix(num_classes=K, **options)] + ([DeviceAugment(pad=4)] if augment else [])
    model = ComposerClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(C * H * W, K)),
                               num_classes=K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Composer's notes about the CPU and the optimizer
        trainer = Trainer(model=model, train_dataloader=loader, max_duration="1ba",
                          algorithms=algorithms, algorithm_passes=augment_before_mixing,
                          device="cpu", progress_bar=False)
    state, algo = trainer.state, algorithms[0]
    algo.apply(Event.FIT_START, state, trainer.logger)  # reads the dataset's labels, on the host
    state.device = MetaDevice()
    state.batch = next(iter(loader))
    trainer.engine.run_event(Event.AFTER_DATALOADER)

    images, target = state.batch
    assert images.device == META and images.shape == (N, C, H, W) and images.dtype == torch.uint8
    assert target.device == META
    if options.get("interpolate_loss"):
        assert target.shape == (N,) and target.dtype == torch.int64
        assert algo._loss_lam < 1.0 and algo._permuted_target.device == META
        # AFTER_LOSS: the loss against the permuted labels, mixed by λ, also on the device.
        state.model.to(META)
        state.outputs = state.model(state.batch)
        state.loss = state.model.loss(state.outputs, state.batch)
        trainer.engine.run_event(Event.BEFORE_TRAIN_BATCH)
        before = state.loss
        trainer.engine.run_event(Event.AFTER_LOSS)
        assert state.loss is not before and state.loss.device == META and state.loss.shape == ()
    else:
        assert target.shape == (N, K) and target.dtype == torch.float32
    if options.get("p") == 0.0:
        assert algo.last_lam == 1.0
    else:
        assert algo.last_perm is not None and algo.last_perm.device.type == "cpu"
