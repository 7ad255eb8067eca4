"""Knowledge distillation: a teacher's soft P(atypical) for every training crop, so that one student
network (e.g. the 128 px multi-task MobileNetV2) can learn an ensemble's decisions and ship at a single
network's speed (``train.distil_teacher``, ``train.distil_weight``; docs/TRAINING.md).

The teacher (any model file, an ensemble file included) predicts each crop once, before training, on the
un-augmented crop (its 8 dihedral views averaged with ``train.distil_tta``); the student's class loss is
``(1 - w) * CE(label) + w * CE(teacher distribution)``. Probabilities are cached by the teacher file's
hash and the crops' pixels, so a grid of students pays for the teacher once.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from mitotype.errors import MitotypeError

log = logging.getLogger(__name__)


def teacher_probs(teacher: str, images: np.ndarray, tta: bool = True, batch_size: int = 64,
                  progress: bool = False) -> np.ndarray:
    """(N,) the teacher's P(atypical) for ``images`` (N, H, W, 3) uint8, from the cache when it is there."""
    from mitotype.data.cache import cache_dir
    from mitotype.io import sha256_file, write_bytes
    from mitotype.models.inference import predict_proba
    from mitotype.models.modelfile import load_model, model_file

    path = model_file(teacher)
    try:
        digest = hashlib.sha256(sha256_file(path).encode())
    except OSError:
        raise MitotypeError(f"train.distil_teacher: {teacher}: model file not found") from None
    digest.update(f"tta={tta}".encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    cached = cache_dir("teacher") / f"{digest.hexdigest()[:32]}.npy"
    if cached.is_file():
        probs = np.load(cached)
        if probs.shape == (len(images),):
            return probs
    loaded = load_model(teacher)
    log.info("teacher %s: predicting %d training crops%s", teacher, len(images), " (8-fold TTA)" if tta else "")
    # backend auto: onnxruntime on CPU, about 3x eager PyTorch for a large teacher (exported once, cached)
    probs = predict_proba([loaded], images, batch_size=batch_size, tta=tta, progress=progress, backend="auto")
    import io

    buffer = io.BytesIO()
    np.save(buffer, probs.astype(np.float32))
    write_bytes(cached, buffer.getvalue())
    return probs.astype(np.float32)
