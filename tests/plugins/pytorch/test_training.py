"""The PyTorch plugin's networks and training loop, on small real MNIST slices."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from modelcycle.core.config import Hyperparameters, UseCaseConfig
from modelcycle.core.registry import PluginRegistry
from modelcycle.core.training import TrainingContext, TrainingReporter, dataset_input_shape, load_training_data
from modelcycle.plugins.pytorch.config import PytorchModelConfig
from modelcycle.lib.torch.nets import CifarNet, ConvNet, FCNet


def test_convnet_parameter_counts_match_the_seed_summary() -> None:
    model = ConvNet()
    counts = [sum(p.numel() for p in layer.parameters()) for layer in (model.conv1, model.conv2, model.fc1, model.fc2)]
    assert counts == [260, 5_020, 16_050, 510]
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("hidden_channels", [2, 5, 10, 20, 32])
def test_convnet_hidden_channels_sweep_values_build(hidden_channels: int) -> None:
    model = ConvNet(hidden_channels=hidden_channels)
    assert model.conv2.out_channels == hidden_channels
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_convnet_conv_dropout_is_an_option_defaulting_to_the_seeds_half() -> None:
    from modelcycle.core.config import validate_section
    from modelcycle.core.errors import ConfigError
    from modelcycle.lib.torch.nets import build_net

    assert build_net(PytorchModelConfig(), 1, 28, 10).conv2_drop.p == 0.5  # old manifests: the seed's net
    net = build_net(PytorchModelConfig(conv_dropout=0.0, dropout=0.2), 1, 28, 10)
    assert (net.conv2_drop.p, net.dropout) == (0.0, 0.2)
    features = torch.rand(2, 20, 10, 10)
    assert torch.equal(net.train().conv2_drop(features), features)  # no channel is dropped in training
    assert not torch.equal(build_net(PytorchModelConfig(), 1, 28, 10).train().conv2_drop(features), features)
    assert PytorchModelConfig(conv_dropout=0.1).model_dump()["conv_dropout"] == 0.1  # recorded in the manifest
    with pytest.raises(ConfigError, match=r"model\.conv_dropout"):
        validate_section(PytorchModelConfig, {"conv_dropout": 1.0}, "model", "f")
    with pytest.raises(ConfigError, match="conv_dropout configure a built-in network"):
        validate_section(PytorchModelConfig, {"class": "nets.py:Net", "conv_dropout": 0.1}, "model", "f")


def test_fc_and_cifar_nets_give_log_probabilities() -> None:
    fc = FCNet(hidden_size=32)
    assert fc.layers[1].out_features == 32
    out = fc(torch.rand(4, 1, 28, 28))
    assert torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-5)
    cifar = CifarNet()
    assert cifar(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("architecture", ["cnn", "fc", "cifar"])
@pytest.mark.parametrize(("channels", "height", "width"), [(3, 24, 32), (1, 40, 19), (4, 64, 64)])
def test_every_built_in_net_takes_images_of_any_height_width_and_channels(
        architecture: str, channels: int, height: int, width: int) -> None:
    from modelcycle.lib.torch.nets import build_net

    net = build_net(PytorchModelConfig(architecture=architecture), channels, (height, width), 7)
    assert net(torch.rand(2, channels, height, width)).shape == (2, 7)
    assert build_net(PytorchModelConfig(architecture=architecture), channels, 32, 3)(
        torch.rand(1, channels, 32, 32)).shape == (1, 3)  # one side: a square


def test_images_too_small_for_the_cnn_say_so() -> None:
    with pytest.raises(ValueError, match=r"images of 10x30 are too small for the cnn .* at least 18 pixels"):
        ConvNet(image_size=(10, 30))


def _context(data_dir: Path, stream: io.StringIO, **hyperparameters: object) -> tuple[TrainingContext, object, PluginRegistry]:
    config = UseCaseConfig(
        name="t", framework="pytorch",
        data={"dataset": "mnist", "train_limit": 1280, "test_limit": 200},  # type: ignore[arg-type]
        hyperparameters=Hyperparameters(**{"epochs": 1, "log_interval": 5, **hyperparameters}),  # type: ignore[arg-type]
    )
    registry = PluginRegistry()
    registry.load_framework("pytorch")
    dataset, preprocessing = load_training_data(config)
    context = TrainingContext(
        config=config, model_config=PytorchModelConfig(), registry=registry,
        reporter=TrainingReporter(registry.hook, stream=stream, progress=False), run_id="r", output_dir=Path("/nonexistent"),
        preprocessing=preprocessing, input_shape=dataset_input_shape(dataset),
    )
    return context, dataset, registry


def _fit(data_dir: Path, **hyperparameters: object) -> tuple[TrainingContext, torch.nn.Module, str]:
    stream = io.StringIO()
    context, dataset, registry = _context(data_dir, stream, **hyperparameters)
    model = registry.call_first("build_model", model_config=context.model_config, dataset=dataset, context=context)
    registry.call_first("fit", model=model, dataset=dataset, context=context)
    return context, model, stream.getvalue()


def test_configured_learning_rate_and_optimizer_are_used(data_dir: Path) -> None:
    context, _, _ = _fit(data_dir, learning_rate=0.0123, lr_schedule="constant", beta_1=0.8)
    optimizer = context.state["optimizer"]
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0123)
    assert optimizer.param_groups[0]["betas"][0] == pytest.approx(0.8)
    context, _, _ = _fit(data_dir, optimizer="sgd", learning_rate=0.05, lr_schedule="constant", momentum=0.5)
    assert isinstance(context.state["optimizer"], torch.optim.SGD)
    assert context.state["optimizer"].param_groups[0]["momentum"] == 0.5


def test_same_seed_gives_identical_weights_and_another_seed_does_not(data_dir: Path) -> None:
    _, first, _ = _fit(data_dir, seed=7)
    _, second, _ = _fit(data_dir, seed=7)
    _, third, _ = _fit(data_dir, seed=8)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, c) for a, c in zip(first.state_dict().values(), third.state_dict().values()))


def test_fit_prints_the_seed_log_lines_and_reports_epoch_metrics(data_dir: Path) -> None:
    context, _, output = _fit(data_dir, epochs=2)
    assert "Train Epoch: 1 [320/1280 (25%)] Loss: " in output
    assert "Train Epoch: 2 [960/1280 (75%)] Loss: " in output
    assert output.count("Test set: Average loss: ") == 2
    assert "/200 (" in output
    history = context.reporter.history
    assert [h["epoch"] for h in history] == [1.0, 2.0]
    assert all(0.0 <= h["test_accuracy"] <= 1.0 and h["train_loss"] > 0 for h in history)
    assert history[1]["test_accuracy"] > 0.5  # 2 epochs over 1,280 real images learn something
