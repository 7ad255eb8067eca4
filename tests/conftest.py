"""Shared fixtures. Real data lives in ../shared/data (read-only); caches go to a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before anything imports huggingface_hub / timm: a hub download would retry for a minute offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MITOTYPE_SHARED_DATA", REPO.parent / "shared" / "data"))
AMIBR = SHARED / "amibr"
MIDOG25_CSV = SHARED / "midog25" / "MIDOG25_labels.csv"
TRACK2 = SHARED / "midog25-track2-example"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """pytest -n 2 runs two workers on two cores: one torch thread each avoids oversubscription
    (tiny-network tests ran 10-20x faster this way on a busy machine)."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Every test session gets its own mitotype cache (masks, features), never ../shared."""
    if "MITOTYPE_CACHE" not in os.environ:
        os.environ["MITOTYPE_CACHE"] = str(tmp_path_factory.mktemp("mitotype-cache"))
    yield


@pytest.fixture(scope="session")
def amibr_root() -> Path:
    if not (AMIBR / "AMI-BR.csv").is_file():
        pytest.fail(f"real AMi-Br data not found at {AMIBR} (set MITOTYPE_SHARED_DATA)")
    return AMIBR


@pytest.fixture(scope="session")
def track2_root() -> Path:
    if not (TRACK2 / "input" / "stack_5.tiff").is_file():
        pytest.fail(f"MIDOG25 track-2 example not found at {TRACK2}")
    return TRACK2


@pytest.fixture(scope="session")
def midog25_csv() -> Path:
    if not MIDOG25_CSV.is_file():
        pytest.fail(f"MIDOG25 label table not found at {MIDOG25_CSV}")
    return MIDOG25_CSV


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="the slow variants: ten times the examples in the CLI fuzz harness (tests/cli)")


def pytest_configure(config):
    # read by tests/cli/test_cli_fuzz.py when it is imported, after this hook
    if config.getoption("--slow"):
        os.environ["MITOTYPE_FUZZ_SLOW"] = "1"
