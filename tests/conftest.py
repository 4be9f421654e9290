"""Fixtures shared by all tests."""

import pytest

from tiny_models import tiny_model


@pytest.fixture
def tiny():
    """A tiny random Llama + SigLIP LIVE model and its template (eval mode)."""
    return tiny_model()
