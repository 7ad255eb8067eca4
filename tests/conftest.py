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


GET_DATA = ("the tests use real data in MITOTYPE_SHARED_DATA (default ../shared/data beside the clone): "
            "`mitotype data download amibr --to DATA/amibr` fetches AMi-Br (needs internet), the MIDOG 2025 "
            "label table and track-2 example come from doi:10.5281/zenodo.16044804 and "
            "github.com/DeepMicroscopy/MIDOG25_T2_reference_docker; then `export MITOTYPE_SHARED_DATA=DATA`")


def require_data(path: Path, what: str) -> Path:
    """``path`` if it exists, else fail the test with how to get the data (never skip: a skipped test
    would hide that the suite did not run on real images)."""
    if not path.exists():
        pytest.fail(f"{what} not found at {path}; {GET_DATA}")
    return path


@pytest.fixture(scope="session")
def amibr_root() -> Path:
    return require_data(AMIBR / "AMI-BR.csv", "real AMi-Br data").parent


@pytest.fixture(scope="session")
def track2_root() -> Path:
    require_data(TRACK2 / "input" / "stack_5.tiff", "MIDOG25 track-2 example")
    return TRACK2


@pytest.fixture(scope="session")
def midog25_csv() -> Path:
    return require_data(MIDOG25_CSV, "MIDOG25 label table")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="the slow variants: ten times the examples in the CLI fuzz harness (tests/cli)")


def pytest_configure(config):
    # read by tests/cli/test_cli_fuzz.py when it is imported, after this hook
    if config.getoption("--slow"):
        os.environ["MITOTYPE_FUZZ_SLOW"] = "1"


def write_manifest(path: Path, figures) -> str:
    """A ``manifest:`` spec of ``figures`` (path, label, domain, group), written to ``path``."""
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "domain", "group"])
        for f in figures:
            writer.writerow([str(Path(f.path).resolve()), f.label, f.domain, f.group])
    return f"manifest:{path}"
