"""Encoders: a module whose ``forward(x)`` returns feature maps (fine to coarse) plus ``feature_info``.

* any timm CNN through ``features_only`` (``resnetv2_50`` = the paper's pre-activation ResNet-50,
  ``efficientnet_b0``, ``convnext_tiny``, ``resnet18`` ...), tapped at its last four levels (strides 4, 8, 16,
  32 for the usual CNNs): the decoders need the deepest map plus three skips;
* ``tv_mobilenet_v2``: torchvision's MobileNetV2, tapped at strides 2/4/8/16/32;
* ViTs (names ``vit_*``, ``deit*``, ``eva*``, ``hf-hub:*``) are built by ``mitotype.models.vit``.

Pretrained ImageNet weights come through each library's own mechanism (timm: the Hugging Face hub or its
cache; torchvision: the torch hub cache, which ``mitotype weights install`` fills offline); ``weights: PATH``
loads a local file instead.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from mitotype.config import ModelConfig
from mitotype.errors import MitotypeError

VIT_PREFIXES = ("vit_", "deit", "eva", "hf-hub:")


class FeatureInfo:
    """``channels()`` and ``reduction()`` per level (the part of timm's FeatureInfo the decoders use)."""

    def __init__(self, channels: list[int], reductions: list[int]):
        self._channels = list(channels)
        self._reductions = list(reductions)

    def channels(self, idx: int | None = None):
        return self._channels if idx is None else self._channels[idx]

    def reduction(self, idx: int | None = None):
        return self._reductions if idx is None else self._reductions[idx]

    def __len__(self) -> int:
        return len(self._channels)

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self._channels}, reduction={self._reductions})"


class TimmEncoder(nn.Module):
    """A timm ``features_only`` model restricted to its last four levels."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        import timm

        kwargs = {"features_only": True, "out_indices": (-4, -3, -2, -1)}
        if cfg.drop_path_rate:
            kwargs["drop_path_rate"] = cfg.drop_path_rate
        pretrained = cfg.pretrained or bool(cfg.weights)
        if cfg.weights:
            kwargs["pretrained_cfg_overlay"] = {"file": str(_existing(cfg.weights))}
        try:
            self.body = timm.create_model(cfg.encoder, pretrained=pretrained, **kwargs)
        except RuntimeError as exc:
            if "Unknown model" in str(exc):
                raise MitotypeError(f"model.encoder: unknown encoder {cfg.encoder!r} ({exc}); use a timm "
                                    "CNN name (timm.list_models()), tv_mobilenet_v2, or a ViT name") from None
            raise _weights_error(cfg, exc) from None
        except (OSError, ValueError) as exc:  # hub offline / not cached, unreadable local file
            raise _weights_error(cfg, exc) from None
        info = self.body.feature_info
        self.feature_info = FeatureInfo(info.channels(), info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


class TorchvisionMobileNetV2(nn.Module):
    """torchvision MobileNetV2 ``features``, tapped after the blocks that end each stride (2/4/8/16/32)."""

    TAPS = (1, 3, 6, 13, 18)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from torchvision.models import mobilenet_v2

        self.features = mobilenet_v2(weights=None).features
        if cfg.weights:
            _load_local(self, _existing(cfg.weights))
        elif cfg.pretrained:
            from mitotype.models.weights import load_torchvision_state

            state = load_torchvision_state("tv_mobilenet_v2")
            self.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")})
        x = torch.zeros(1, 3, 64, 64)
        channels, reductions = [], []
        self.features.eval()  # the probe must not touch BatchNorm running statistics
        with torch.no_grad():
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i in self.TAPS:
                    channels.append(x.shape[1])
                    reductions.append(64 // x.shape[-1])
        self.features.train()
        self.feature_info = FeatureInfo(channels, reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                out.append(x)
        return out


def create_encoder(cfg: ModelConfig) -> nn.Module:
    """The encoder named by ``cfg.encoder`` (see the module docstring)."""
    name = cfg.encoder
    if name.startswith(VIT_PREFIXES):
        try:
            vit = importlib.import_module("mitotype.models.vit")
        except ModuleNotFoundError as exc:
            if exc.name != "mitotype.models.vit":
                raise
            raise MitotypeError(f"model.encoder {name!r} is a ViT, but mitotype.models.vit is not available "
                                "in this installation") from None
        return vit.create_vit_encoder(cfg)
    if name == "tv_mobilenet_v2":
        return TorchvisionMobileNetV2(cfg)
    return TimmEncoder(cfg)


def _existing(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise MitotypeError(f"{p}: model.weights file not found")
    return p


def _load_local(module: nn.Module, path: Path) -> None:
    """A torchvision-style state dict (full classifier or features only) into ``module``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise MitotypeError(f"{path}: not a readable PyTorch weights file ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = module.state_dict()
    picked = {k: v for k, v in state.items() if k in own} if isinstance(state, dict) else {}
    missing = [k for k in own if k not in picked]
    if missing:
        raise MitotypeError(f"{path}: does not hold the weights of this encoder ({len(missing)} of "
                            f"{len(own)} tensors missing, e.g. {missing[0]!r})")
    try:
        module.load_state_dict(picked)
    except RuntimeError as exc:
        raise MitotypeError(f"{path}: weights do not fit this encoder ({str(exc).splitlines()[1:2]})") from None


def _weights_error(cfg: ModelConfig, exc: Exception) -> MitotypeError:
    detail = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    if cfg.weights:
        return MitotypeError(f"{cfg.weights}: not loadable as weights of encoder {cfg.encoder!r} ({detail})")
    return MitotypeError(
        f"could not load the pretrained weights of encoder {cfg.encoder!r} ({detail}). Offline, timm weights "
        "must already be in the Hugging Face cache: run once with internet access (unset HF_HUB_OFFLINE), or "
        "give a local file with model.weights=PATH, or train from scratch with model.pretrained=false. "
        "The torchvision encoder tv_mobilenet_v2 works offline after `mitotype weights install`."
    )
