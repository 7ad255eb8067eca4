"""MitoNet: shared encoder + classification head + optional U-Net-like auxiliary decoders.

Dense tasks (each switched on in ``ModelConfig``): ``segmentation`` -> ``mask`` (1 channel, figure logits),
``pixel_classes`` -> ``classes`` (3 channels: background / normal / atypical), ``localisation`` ->
``heatmap`` (1 channel, centre logits). The decoders run in training mode only (or when ``dense=True`` is
asked for overlays), so prediction costs the encoder and the head alone -- except with ``mask_pooling``,
where the segmentation decoder also runs at inference to weight the pooling.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from mitotype.config import DENSE_TASKS as TASKS  # task -> (output field, channels)
from mitotype.config import ModelConfig
from mitotype.errors import MitotypeError
from mitotype.models.decoder import DenseHead, UnetDecoder
from mitotype.models.heads import ClassificationHead


class Outputs(NamedTuple):
    logits: torch.Tensor
    mask: torch.Tensor | None = None
    classes: torch.Tensor | None = None
    heatmap: torch.Tensor | None = None


class MitoNet(nn.Module):
    def __init__(self, cfg: ModelConfig, encoder: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.tasks = cfg.dense_tasks
        self.encoder = encoder
        channels = list(encoder.feature_info.channels())
        self.head = ClassificationHead(channels[-1], cfg.head_hidden, cfg.head_dropout)
        dec_channels = tuple(cfg.decoder_channels)
        if self.tasks and len(dec_channels) > len(channels) - 1:
            raise MitotypeError(f"model.decoder_channels: {len(dec_channels)} decoder blocks need "
                                f"{len(dec_channels) + 1} encoder levels; {cfg.encoder} has {len(channels)}, so "
                                f"give at most {len(channels) - 1} widths")
        if cfg.shared_decoder and self.tasks:
            self.decoders = nn.ModuleDict({"shared": UnetDecoder(channels, dec_channels)})
        else:
            self.decoders = nn.ModuleDict({t: UnetDecoder(channels, dec_channels) for t in self.tasks})
        self.dense_heads = nn.ModuleDict({t: DenseHead(dec_channels[-1], TASKS[t][1]) for t in self.tasks})
        self.encoder_frozen = False

    # -- forward ------------------------------------------------------------------------------------------
    def _dense(self, features: list[torch.Tensor], tasks: list[str], size) -> dict[str, torch.Tensor]:
        if "shared" in self.decoders and tasks:
            shared = self.decoders["shared"](features)
            return {t: self.dense_heads[t](shared, size) for t in tasks}
        return {t: self.dense_heads[t](self.decoders[t](features), size) for t in tasks}

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps, fine to coarse (``encoder.feature_info`` gives their channels)."""
        return self.encoder(x)

    def forward_head(self, features: list[torch.Tensor], size, dense: bool = False) -> Outputs:
        """Outputs from :meth:`forward_features`' maps at input ``size`` (H, W): the class logits, and the
        dense tasks' maps when ``dense``. With ``mask_pooling`` the segmentation decoder runs either way,
        since its mask weights the head's pooling."""
        wanted = list(self.tasks) if dense else []
        if self.cfg.mask_pooling and "segmentation" not in wanted:
            wanted.append("segmentation")
        dense_out = self._dense(features, wanted, size)
        logits = self.head(features[-1], dense_out.get("segmentation") if self.cfg.mask_pooling else None)
        fields = {TASKS[t][0]: v for t, v in dense_out.items() if dense}
        return Outputs(logits, **fields)

    def forward(self, x: torch.Tensor, dense: bool | None = None) -> Outputs:
        """``dense=None``: decoders in training mode only; True/False forces them on/off."""
        run_dense = self.training if dense is None else dense
        return self.forward_head(self.forward_features(x), x.shape[-2:], dense=run_dense)

    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, pooled features) without the decoders (except the mask for mask pooling): the same
        logits as ``forward(x, dense=False)``, plus the global average of every encoder stage, concatenated
        (N, sum of ``feature_info.channels()``), which the shift score (``models.shift``) measures. Every
        stage, not only the last: the early ones carry stain and scanner, which the classifier's own
        features are trained to ignore (docs/TRUST.md)."""
        features = self.forward_features(x)
        logits = self.forward_head(features, x.shape[-2:]).logits
        return logits, torch.cat([f.float().mean(dim=(2, 3)) for f in features], dim=1)

    @torch.inference_mode()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) P(atypical), in eval mode and without decoders; the previous mode is restored."""
        was_training = self.training
        self.eval()
        try:
            return torch.softmax(self(x, dense=False).logits.float(), dim=1)[:, 1]
        finally:
            self.train(was_training)

    def cam_stage(self, stride: int = 8) -> int:
        """Index of the encoder stage whose maps are ``stride`` x finer than the input (else the deepest
        stage at most that coarse): Grad-CAM there is 16 x 16 at 128 px, fine enough to show the cell."""
        reductions = list(self.encoder.feature_info.reduction())
        fitting = [i for i, r in enumerate(reductions) if r <= stride]
        return fitting[-1] if fitting else len(reductions) - 1

    def cam(self, x: torch.Tensor, target: int = 1, stage: int | None = None) -> torch.Tensor:
        """Grad-CAM of class ``target`` (default atypical) on encoder stage ``stage`` (default
        :meth:`cam_stage`, stride 8; -1 = the deepest): (N, H, W) in [0, 1].

        Gradients of the target logit with respect to that stage's feature map are averaged per channel and
        weight the map; ReLU, bilinear up-sampling to the input size, and per-image max-normalisation. The
        deepest stage is 4 x 4 at 128 px, which reads as blobs along the border, hence the finer default.
        The input is made to require gradients, so a frozen encoder works too; parameter gradients are not
        touched.
        """
        stage = self.cam_stage() if stage is None else stage
        was_training = self.training
        self.eval()
        try:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                features = self.forward_features(x)  # the forward path itself, keeping the stage's map
                chosen = features[stage]
                logits = self.forward_head(features, x.shape[-2:], dense=False).logits
                (grad,) = torch.autograd.grad(logits[:, target].sum(), chosen)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * chosen.detach()).sum(dim=1, keepdim=True))
            cam = nn.functional.interpolate(cam.float(), size=x.shape[-2:], mode="bilinear",
                                            align_corners=False)[:, 0]
            return cam / cam.flatten(1).amax(dim=1).clamp_min(1e-8)[:, None, None]
        finally:
            self.train(was_training)

    # -- fine-tuning ----------------------------------------------------------------------------------------
    def freeze_encoder(self) -> None:
        """No gradients into the encoder and its normalisation statistics fixed (eval mode) from now on."""
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder_frozen = True
        self.encoder.eval()

    def train(self, mode: bool = True) -> MitoNet:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self
