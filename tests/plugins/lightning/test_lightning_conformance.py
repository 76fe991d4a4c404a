"""The Lightning plugin passes the adapter contract exactly as a third-party adapter would."""

from modelcycle.testing import FrameworkConformance


class TestLightningConformance(FrameworkConformance):
    framework = "lightning"
    model_options = {"architecture": "cnn", "hidden_channels": 10}
