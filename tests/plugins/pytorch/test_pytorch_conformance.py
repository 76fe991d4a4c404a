"""The PyTorch plugin passes the adapter contract exactly as a third-party adapter would."""

from modelcycle.testing import FrameworkConformance


class TestPytorchConformance(FrameworkConformance):
    framework = "pytorch"
    model_options = {"architecture": "cnn", "hidden_channels": 10}
