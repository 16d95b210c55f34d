"""Settings come from MMA_* variables; the reference in docs/ is generated from the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.settings import Settings, settings_reference

ROOT = Path(__file__).resolve().parents[2]


def test_environment_variables_fill_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMA_GATEWAY_PORT", "9123")
    monkeypatch.setenv("MMA_CREDIT_PRODUCT_MAP", '{"MINA-100": 100}')
    monkeypatch.setenv("MMA_ADMIN_TOKEN", "s3cret")
    monkeypatch.setenv("MMA_WELCOME_CREDITS", "0")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.gateway_port == 9123
    assert settings.credit_product_map == {"MINA-100": 100}
    assert settings.welcome_credits == 0
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_defaults_are_safe_for_a_laptop() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.infra == "embedded" and settings.gateway_host == "127.0.0.1" and settings.gateway_port == 8080
    assert (settings.price_still_create, settings.price_still_tweak) == (1, 1)
    assert (settings.price_video_animate, settings.price_video_tweak) == (5, 5)


def test_docs_settings_reference_is_up_to_date() -> None:
    """Regenerate with `python -m libs.settings > docs/settings.md`."""
    assert (ROOT / "docs" / "settings.md").read_text() == settings_reference()
