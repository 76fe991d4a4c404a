"""Serving tokens: blank or shorter than 16 characters is refused at deploy — as
``serving.token`` when the configuration is loaded, as ``MODELCYCLE_ENDPOINT_TOKEN`` when the
local platform deploys — with an error naming the setting and how to make a good token (never
the token itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_use_case
from modelcycle.core.config import ServingConfig, load_config
from modelcycle.core.errors import ConfigError
from modelcycle.platforms.local import plugin

GOOD = "a-random-token-0123456789"


@pytest.mark.parametrize("token", ["x", "s3cret", "fifteen-chars!!", "", "   ", "\t", " padded-token-0123456789 "])
def test_short_blank_or_padded_serving_token_is_refused(tmp_path: Path, token: str) -> None:
    directory = write_use_case(tmp_path / "uc", serving={"token": token})
    with pytest.raises(ConfigError) as info:
        load_config(directory, environ={})
    message = str(info.value)
    assert "serving.token" in message and "secrets.token_urlsafe" in message
    if token.strip():
        assert token.strip() not in message  # the secret is never echoed


def test_a_16_character_token_is_accepted(tmp_path: Path) -> None:
    config = load_config(write_use_case(tmp_path / "uc", serving={"token": "0123456789abcdef"}), environ={})
    assert config.endpoint_token() == "0123456789abcdef"
    assert ServingConfig.check_token(GOOD, "x") == GOOD


@pytest.mark.parametrize("token", ["short", "   ", "0123456789abcde"])
def test_a_short_or_blank_environment_token_is_refused_at_deploy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    """The deploy hook refuses it before any process starts."""
    monkeypatch.setenv("MODELCYCLE_ENDPOINT_TOKEN", token)
    config = load_config(write_use_case(tmp_path / "uc"), environ={})
    assert config.endpoint_token() == token
    with pytest.raises(ConfigError) as info:
        plugin.deploy_endpoint(name="never", model_dir=tmp_path / "no-model", settings=config.serving,
                               token=config.endpoint_token(), work_dir=tmp_path / "work", monitoring=config.monitoring)
    message = str(info.value)
    assert "MODELCYCLE_ENDPOINT_TOKEN" in message and "cannot deploy" in message
    assert not (tmp_path / "work" / "endpoints").exists()  # nothing was started
