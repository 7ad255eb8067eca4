"""ViT and pathology foundation-model encoders for the multi-task network.

A timm ViT (``vit_*``, ``deit*``, ``eva*``, ``hf-hub:ORG/NAME``) is tapped at four
evenly spaced blocks with ``forward_intermediates`` (prefix and register tokens dropped, tokens reshaped to
2-D maps), then turned into a four-level pyramid at strides 4, 8, 16, 32 in the manner of ViTDet's simple
feature pyramid: the earliest map up-sampled x4 and the next x2 with transposed convolutions, the third kept,
the last max-pooled x2; each level is then projected (1x1 conv + LayerNorm) to ``embed_dim/4, /2, 1, 1``
channels. The classification head pools the coarsest level; the U-Net-like decoders size themselves from
``feature_info`` exactly as for a CNN.

Sizes: the encoder is built for ``cfg.input_size`` (timm resamples the pretrained position embedding once)
and with ``dynamic_img_size`` where timm supports it, so other sizes work too. Crops are resized from
``crop_size`` to ``input_size`` by the model's stored preprocessing (data.transforms, inference). For a
patch size other than 16 (UNI2-h, Virchow2, H-optimus: 14) the levels are resized to the nominal strides.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mitotype.config import ModelConfig
from mitotype.errors import MitotypeError
from mitotype.models.feature_info import FeatureInfo

VIT_PREFIXES = ("vit_", "deit", "eva", "hf-hub:")  # the factory (models/encoders.py) dispatches these
REDUCTIONS = (4, 8, 16, 32)
GATED_HINT = "accept its licence on its Hugging Face page"


def _swiglu_packed() -> Any:
    from timm.layers import SwiGLUPacked

    return SwiGLUPacked


def _glu_silu() -> Any:
    from timm.layers.mlp import GluMlp

    return functools.partial(GluMlp, act_layer=nn.SiLU, gate_last=False)


# Architecture arguments the model cards ask for (their config.json cannot hold Python classes).
# Values are callables so that timm is imported only when a model is built.
HUB_KWARGS: dict[str, dict[str, Any]] = {
    "MahmoodLab/UNI": {"init_values": lambda: 1e-5},
    "MahmoodLab/UNI2-h": {
        "patch_size": lambda: 14, "depth": lambda: 24, "num_heads": lambda: 24,
        "init_values": lambda: 1e-5, "embed_dim": lambda: 1536, "mlp_ratio": lambda: 2.66667 * 2,
        "no_embed_class": lambda: True, "mlp_layer": _swiglu_packed, "act_layer": lambda: nn.SiLU,
        "reg_tokens": lambda: 8,
    },
    "paige-ai/Virchow": {"mlp_layer": _swiglu_packed, "act_layer": lambda: nn.SiLU},
    "paige-ai/Virchow2": {"mlp_layer": _swiglu_packed, "act_layer": lambda: nn.SiLU},
    "bioptimus/H-optimus-0": {"init_values": lambda: 1e-5},
    "bioptimus/H-optimus-1": {"init_values": lambda: 1e-5},
}


def is_vit_encoder(name: str) -> bool:
    return name.startswith(VIT_PREFIXES)


def hub_id(name: str) -> str | None:
    """``ORG/NAME`` of an ``hf-hub:`` encoder name (revision suffix dropped), else None."""
    if not name.startswith("hf-hub:"):
        return None
    return name[len("hf-hub:"):].split("@")[0]


def weights_help(name: str) -> str:
    """What a user can do when the weights of ``name`` cannot be had."""
    repo = hub_id(name)
    page = f"https://huggingface.co/{repo}" if repo else "the model's Hugging Face page"
    text = (f"If the model is gated, {GATED_HINT} ({page}), then log in (`hf auth login`, or "
            "`huggingface-cli login`) or set HF_TOKEN; offline, run once with internet access so that the "
            "Hugging Face cache holds it (HF_HUB_OFFLINE=1 then reads the cache), or pass model.weights=PATH "
            "(a weights file, or a folder with config.json and the weights, e.g. from `hf download`)")
    if repo:  # even random initialisation needs the hub's config.json for the architecture
        return text + "."
    return text + "; or train from random initialisation with model.pretrained=false."


class ViTEncoder(nn.Module):
    """timm ViT backbone + simple feature pyramid; ``forward(x) -> [s4, s8, s16, s32]`` maps."""

    def __init__(self, backbone: nn.Module, name: str, base_from_hub: bool):
        super().__init__()

        self.backbone = backbone
        self.name = name
        # True when the base weights come from a named hub model (they are then left out of model files).
        self.base_from_hub = base_from_hub
        self.backbone_frozen = False
        depth = len(backbone.feature_info)
        self.indices = sorted({max(0, round(depth * (i + 1) / 4) - 1) for i in range(4)})
        if len(self.indices) != 4:
            raise MitotypeError(f"model.encoder {name!r}: {depth} blocks are too few for a 4-level pyramid")
        self.patch = _patch_size(backbone)
        dim = backbone.embed_dim
        from timm.layers import LayerNorm2d

        def up(cin: int, cout: int) -> nn.Module:
            return nn.ConvTranspose2d(cin, cout, 2, stride=2)

        self.scales = nn.ModuleList([
            nn.Sequential(up(dim, dim // 2), LayerNorm2d(dim // 2), nn.GELU(), up(dim // 2, dim // 4)),
            up(dim, dim // 2),
            nn.Identity(),
            nn.MaxPool2d(2, ceil_mode=True),
        ])
        chans = [dim // 4, dim // 2, dim, dim]
        self.proj = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 1, bias=False), LayerNorm2d(c)) for c in chans)
        self.feature_info = FeatureInfo(chans, list(REDUCTIONS))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        maps = self.backbone.forward_intermediates(x, indices=self.indices, intermediates_only=True)
        out = []
        for fmap, scale, proj, r in zip(maps, self.scales, self.proj, REDUCTIONS):
            y = scale(fmap)
            size = (-(-h // r), -(-w // r))
            if tuple(y.shape[-2:]) != size:  # patch size other than 16
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out.append(proj(y))
        return out

    def train(self, mode: bool = True) -> ViTEncoder:
        super().train(mode)
        if self.backbone_frozen:  # frozen: no dropout / drop-path, fixed statistics in the backbone
            self.backbone.eval()
        return self


def _patch_size(backbone: nn.Module) -> int:
    patch = getattr(getattr(backbone, "patch_embed", None), "patch_size", 16)
    return int(patch[0] if isinstance(patch, (tuple, list)) else patch)


def _timm_kwargs(cfg: ModelConfig, name: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"num_classes": 0, "img_size": cfg.input_size, "dynamic_img_size": True}
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    repo = hub_id(name)
    for key, value in HUB_KWARGS.get(repo or "", {}).items():
        kwargs.setdefault(key, value())
    return kwargs


def _source(cfg: ModelConfig) -> tuple[str, bool, dict[str, Any]]:
    """(timm name, pretrained flag, extra kwargs) for the weights source the config names."""
    name = cfg.encoder
    if not cfg.weights:
        return name, cfg.pretrained, {}
    path = Path(cfg.weights).expanduser()
    if path.is_dir():  # a downloaded hub snapshot: config.json + weights, no network needed
        if not (path / "config.json").is_file():
            raise MitotypeError(f"{path}: model.weights folder has no config.json (expected a Hugging Face "
                                "model folder, e.g. from `hf download ORG/NAME --local-dir FOLDER`)")
        return f"local-dir:{path}", True, {}
    if not path.is_file():
        raise MitotypeError(f"{path}: model.weights file not found")
    # timm loads the file with the model's own checkpoint filter (position-embedding resampling etc.)
    return name, True, {"pretrained_cfg_overlay": {"file": str(path), "source": "", "hf_hub_id": None}}


def create_vit_encoder(cfg: ModelConfig) -> ViTEncoder:
    """The ViT encoder ``cfg.encoder`` names, with its weights (hub, cache, local file) or random init."""
    import timm

    name = cfg.encoder
    timm_name, pretrained, extra = _source(cfg)
    kwargs = {**_timm_kwargs(cfg, name), **extra}
    try:
        try:
            backbone = timm.create_model(timm_name, pretrained=pretrained, **kwargs)
        except TypeError as exc:  # some ViT families do not take dynamic_img_size
            if "dynamic_img_size" not in str(exc):
                raise
            kwargs.pop("dynamic_img_size")
            backbone = timm.create_model(timm_name, pretrained=pretrained, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise MitotypeError(f"model.encoder: unknown ViT {name!r} ({exc}); use a timm name such as "
                                "vit_small_patch16_224 (timm.list_models('vit_*')) or hf-hub:ORG/NAME") from None
        raise _weights_error(cfg, exc) from None
    except (OSError, ValueError) as exc:  # hub offline / gated / not cached / unreadable local file
        raise _weights_error(cfg, exc) from None
    except Exception as exc:  # huggingface_hub errors that are not OSErrors (HTTP, auth)
        if type(exc).__module__.startswith(("huggingface_hub", "requests", "httpx", "urllib")):
            raise _weights_error(cfg, exc) from None
        raise
    if not hasattr(backbone, "forward_intermediates") or not hasattr(backbone, "embed_dim"):
        raise MitotypeError(f"model.encoder {name!r}: not a ViT with forward_intermediates (timm); use a "
                            "vit_*/deit*/eva* model or a CNN name")
    _check_normalisation(cfg, backbone, pretrained)
    return ViTEncoder(backbone, name, base_from_hub=bool(pretrained and not cfg.weights))


def _weights_error(cfg: ModelConfig, exc: Exception) -> MitotypeError:
    where = f"{cfg.weights}: " if cfg.weights else ""
    reason = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else ""
    return MitotypeError(f"{where}the weights of encoder {cfg.encoder!r} could not be had "
                         f"({type(exc).__name__}: {reason}). {weights_help(cfg.encoder)}")


def _check_normalisation(cfg: ModelConfig, backbone: nn.Module, pretrained: bool) -> None:
    """Warn when a pretrained encoder is fed images normalised otherwise than it was trained on."""
    pcfg = getattr(backbone, "pretrained_cfg", None) or {}
    mean, std = pcfg.get("mean"), pcfg.get("std")
    if not pretrained or mean is None or std is None:
        return
    if any(abs(a - b) > 1e-3 for a, b in zip((*cfg.mean, *cfg.std), (*mean, *std))):
        warnings.warn(f"encoder {cfg.encoder!r} was pretrained with mean={tuple(mean)} std={tuple(std)}, but "
                      f"model.mean={tuple(cfg.mean)} model.std={tuple(cfg.std)}: set them in the config",
                      stacklevel=3)
