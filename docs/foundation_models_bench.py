"""GPU memory and speed of the multi-task network on foundation-model architectures, per fine-tuning mode.

Random initialisation (the architectures, not the gated weights, decide memory and speed), batch 32 at 224 px,
bf16 autocast, all three auxiliary decoders on; 3 warm-up + 10 timed training steps (AdamW), then 5 timed
inference batches of 128 (``predict_proba``: encoder + head only). Run on a GPU from the repository root:

    python3 docs/foundation_models_bench.py        # BATCH=64 to change the batch; writes fm_bench.json to $OUT or .

The numbers in docs/FOUNDATION_MODELS.md came from this script.
"""

from __future__ import annotations

import json
import os
import time

import timm
import torch

from mitotype.config import ModelConfig, RunConfig, TaskConfig
from mitotype.models.finetune import apply_finetune, count_parameters, split_state
from mitotype.models.losses import MultiTaskLoss
from mitotype.models.model import MitoNet
from mitotype.models.vit import HUB_KWARGS, ViTEncoder

ARCHS = {
    "UNI2-h": ("vit_giant_patch14_224", {k: v() for k, v in HUB_KWARGS["MahmoodLab/UNI2-h"].items()}),
    "ViT-L/16 (UNI)": ("vit_large_patch16_224", {"init_values": 1e-5}),
}
BATCH, SIZE = int(os.environ.get("BATCH", "32")), 224


def build(name: str, kwargs: dict, mode: str) -> tuple[MitoNet, ModelConfig]:
    task = TaskConfig(True)
    cfg = ModelConfig(encoder=name, pretrained=True, input_size=SIZE, crop_size=128, finetune=mode,
                      segmentation=task, pixel_classes=task, localisation=task)
    backbone = timm.create_model(name, pretrained=False, num_classes=0, img_size=SIZE, dynamic_img_size=True,
                                 **kwargs)
    model = MitoNet(cfg, ViTEncoder(backbone, name, base_from_hub=True))
    apply_finetune(model, cfg)
    return model, cfg


def measure(model: MitoNet, cfg: ModelConfig) -> dict[str, float]:
    model.cuda().train()
    loss_fn = MultiTaskLoss(RunConfig(model=cfg))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(BATCH, 3, SIZE, SIZE, device="cuda")
    mask = (torch.rand(BATCH, 1, SIZE, SIZE, device="cuda") > 0.8).float()
    batch = {"image": x, "label": torch.randint(0, 2, (BATCH,), device="cuda"), "mask": mask,
             "valid": torch.ones_like(mask), "classes": mask[:, 0].long(), "heatmap": torch.rand_like(mask)}
    torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = loss_fn(model(x), batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    train_ips = 10 * BATCH / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30
    model.eval()
    xi = torch.randn(128, 3, SIZE, SIZE, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(2):
            model.predict_proba(xi)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(5):
            model.predict_proba(xi)
        torch.cuda.synchronize()
    infer_ips = 5 * 128 / (time.perf_counter() - t0)
    return {"peak_train_GiB": round(peak, 1), "train_img_per_s": round(train_ips),
            "infer_img_per_s": round(infer_ips)}


def main() -> None:
    print(torch.__version__, timm.__version__, torch.cuda.get_device_name(), flush=True)
    results = []
    for arch, (name, kwargs) in ARCHS.items():
        for mode in ("lora", "frozen", "full"):
            torch.manual_seed(0)
            model, cfg = build(name, kwargs, mode)
            counts = count_parameters(model)
            stored, _ = split_state(model, cfg, model.state_dict())
            stored_mb = sum(v.numel() * v.element_size() for v in stored.values()) / 2**20
            row = {"arch": arch, "mode": mode, "batch": BATCH, "size": SIZE,
                   "params_total_M": round(counts["total"] / 1e6, 1),
                   "trainable_M": round(counts["trainable"] / 1e6, 2), "model_file_MB": round(stored_mb, 1),
                   **measure(model, cfg)}
            print(json.dumps(row), flush=True)
            results.append(row)
            del model
            torch.cuda.empty_cache()
    with open(os.path.join(os.environ.get("OUT", "."), "fm_bench.json"), "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
