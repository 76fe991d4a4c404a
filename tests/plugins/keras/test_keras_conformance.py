"""The Keras plugin passes the adapter contract exactly as a third-party adapter would."""

from modelcycle.testing import FrameworkConformance


class TestKerasConformance(FrameworkConformance):
    framework = "keras"
    model_options = {"architecture": "cnn", "dense_units": 64}
