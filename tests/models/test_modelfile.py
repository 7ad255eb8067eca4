"""Model file: round trip with identical predictions; corrupt, foreign and wrong-architecture files."""

from __future__ import annotations

import pytest
import torch

from mitotype.config import RunConfig, TaskConfig
from mitotype.errors import MitotypeError
from mitotype.models import create_model
from mitotype.models.modelfile import (
    FORMAT,
    default_model_path,
    load_model,
    read_payload,
    save_model,
)


def small_cfg(encoder="test_resnet") -> RunConfig:
    cfg = RunConfig()
    cfg.model.encoder = encoder
    cfg.model.pretrained = False
    cfg.model.crop_size, cfg.model.input_size, cfg.model.mpp = 96, 64, 0.5
    cfg.model.segmentation = TaskConfig(enabled=True, weight=0.7)
    cfg.model.decoder_channels = (32, 16, 8)
    cfg.model.head_hidden = (32, 16)
    return cfg


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    cfg = small_cfg()
    model = create_model(cfg.model)
    model.train()
    model(torch.rand(4, 3, 64, 64))  # move BatchNorm statistics away from their initial values
    model.eval()
    path = save_model(tmp_path / "model.pt", model, cfg, threshold=0.37, extra={"data_spec": "amibr:X"})
    return path, model, cfg


def test_round_trip_identical_predictions_and_metadata(saved):
    path, model, cfg = saved
    loaded = load_model(path)
    x = torch.rand(3, 3, 64, 64)
    assert torch.equal(loaded.model.predict_proba(x), model.predict_proba(x))
    with torch.no_grad():
        assert torch.equal(loaded.model(x, dense=True).mask, model(x, dense=True).mask)
    assert not loaded.model.training
    assert loaded.threshold == pytest.approx(0.37)
    assert loaded.config.to_dict() == cfg.to_dict()
    meta = loaded.meta
    assert meta["format"] == FORMAT and meta["class_names"] == ["normal", "atypical"]
    assert (meta["crop_size"], meta["input_size"], meta["mpp"]) == (96, 64, 0.5)
    assert meta["mean"] == pytest.approx(list(cfg.model.mean)) and meta["std"] == pytest.approx(list(cfg.model.std))
    assert meta["mitotype_version"] and meta["provenance"]["torch"]
    assert meta["extra"] == {"data_spec": "amibr:X"}


def test_saved_pretrained_config_loads_without_fetching_weights(tmp_path, monkeypatch):
    cfg = small_cfg()
    path = save_model(tmp_path / "m.pt", create_model(cfg.model), cfg)
    payload = torch.load(path, weights_only=True)
    payload["config"]["model"]["pretrained"] = True  # as written by a real training run
    payload["config"]["model"]["weights"] = "/nowhere/imagenet.pth"
    torch.save(payload, path)
    assert load_model(path).config.model.encoder == "test_resnet"


def test_truncated_file(saved):
    path = saved[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MitotypeError, match=f"{path.name}.*corrupt or truncated"):
        load_model(path)


def test_garbage_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(MitotypeError, match="junk.pt"):
        load_model(junk)
    with pytest.raises(MitotypeError, match="nope.pt: model file not found"):
        load_model(tmp_path / "nope.pt")


def test_foreign_checkpoint(tmp_path):
    plain = tmp_path / "resnet.pth"
    torch.save(create_model(small_cfg().model).state_dict(), plain)  # a bare state dict, no format tag
    with pytest.raises(MitotypeError, match="resnet.pth: not a mitotype model file"):
        load_model(plain)


@pytest.mark.parametrize(("change", "message"), [
    ({"encoder": "test_efficientnet"}, "model.pt: the weights do not fit.*test_efficientnet"),  # test_resnet's weights
    ({"pixel_classes": {"enabled": True, "weight": 0.5}}, "do not fit"),  # a decoder that is not in the file
    ({"no_such_key": 1}, "model.pt.*no_such_key"),  # a stored config that no longer reads
])
def test_a_stored_config_that_does_not_match_is_named(saved, change, message):
    path = saved[0]
    payload = read_payload(path)
    payload["config"]["model"].update(change)
    torch.save(payload, path)
    with pytest.raises(MitotypeError, match=message):
        load_model(path)


def test_newer_format_version(saved):
    path = saved[0]
    payload = read_payload(path)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(MitotypeError, match="upgrade mitotype"):
        load_model(path)


def test_default_model(monkeypatch, tmp_path, saved):
    import mitotype.models.modelfile as mf

    monkeypatch.setattr(mf, "shipped_model_path", lambda name="default": tmp_path / "assets" / f"{name}.pt")
    with pytest.raises(MitotypeError, match="default.pt: no 'default' model"):
        load_model("default")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "default.pt").write_bytes(saved[0].read_bytes())
    assert load_model("default").threshold == pytest.approx(0.37)
    assert default_model_path().name == "default.pt"
    with pytest.raises(MitotypeError, match="accurate.pt: no 'accurate' model"):
        load_model("accurate")


def test_save_unwraps_wrappers(tmp_path):
    cfg = small_cfg()
    model = create_model(cfg.model).eval()
    wrapper = torch.nn.Module()
    wrapper.model = model  # e.g. a LightningModule holding the net as .model
    path = save_model(tmp_path / "w.pt", wrapper, cfg)
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(load_model(path).model.predict_proba(x), model.predict_proba(x))
