"""From PyTorch: a model of the layers stablecnn has, exported by PyTorch's own exporter
(``torch.onnx.export``, both the default torch.export-based one and the TorchScript one),
imported into stablecnn, gives PyTorch's outputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (the test extra has it)")
nn = torch.nn

from stablecnn.interop import import_onnx  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Block(nn.Module):
    """A basic residual block: conv, BN, ReLU, conv, BN, plus the input (or its projection)."""

    def __init__(self, c: int, f: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, f, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(f)
        self.conv2 = nn.Conv2d(f, f, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(f)
        self.project = (
            None
            if stride == 1 and c == f
            else nn.Sequential(nn.Conv2d(c, f, 1, stride, bias=False), nn.BatchNorm2d(f))
        )

    def forward(self, x):
        h = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(h + (x if self.project is None else self.project(x)))


class Net(nn.Module):
    """Takes pixels in [0, 255], as a model brought into stablecnn should: the normalisation is
    the first thing it does, so it is in the exported graph."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(33.0))
        self.register_buffer("std", torch.tensor(78.0))
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            Block(8, 8, 1),
            Block(8, 16, 2),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(16),  # after a pool: not folded into a conv, a BatchNormalization
            nn.LeakyReLU(0.1),
            nn.MaxPool2d(3, stride=1),  # overlapping windows
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10)
        )

    def forward(self, x):
        return self.classifier(self.features((x - self.mean) / self.std))


def trained_net() -> Net:
    """The net with batch-norm statistics of its own (a few training-mode passes)."""
    torch.manual_seed(0)
    net = Net().train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(16, 1, 28, 28) * 255)
    return net.eval()


def export(net, path, dynamo: bool):
    x = torch.zeros(2, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        if dynamo:
            pytest.importorskip("onnxscript", reason="PyTorch's default exporter needs onnxscript")
            batch = torch.export.Dim("N")
            torch.onnx.export(net, (x,), str(path), dynamo=True, dynamic_shapes=({0: batch},))
        else:
            torch.onnx.export(
                net,
                (x,),
                str(path),
                dynamo=False,
                input_names=["pixels"],
                dynamic_axes={"pixels": {0: "N"}},
            )


@pytest.mark.parametrize("dynamo", [True, False], ids=["torch.export", "torchscript"])
def test_a_pytorch_model_comes_in_through_onnx_with_its_outputs(tmp_path, dynamo):
    import onnx

    net = trained_net()
    path = tmp_path / "net.onnx"
    export(net, path, dynamo)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"Conv", "Add", "BatchNormalization", "MaxPool", "Gemm", "Sub", "Div"} <= ops
    imported = import_onnx(path)
    assert imported.normalizer.mean == 33.0 and imported.normalizer.std == 78.0
    kinds = [layer["type"] for layer in imported.config["layers"]]
    assert kinds.count("Residual") == 2 and "BatchNorm2d" in kinds and kinds[-1] == "Linear"
    projected = [layer for layer in imported.config["layers"] if "shortcut" in layer]
    assert len(projected) == 1  # the identity block has none
    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    with torch.no_grad():
        theirs = net(torch.from_numpy(images[:, None].astype(np.float32))).numpy()
    ours = np.concatenate(
        [logits for _, logits in imported.model.forward_batches(images, 8, imported.normalizer)]
    )
    scale = np.abs(theirs).max(axis=1, keepdims=True)
    assert (np.abs(ours - theirs) / scale).max() <= 1e-5
    np.testing.assert_array_equal(ours.argmax(axis=1), theirs.argmax(axis=1))
