"""Which prior do a model's P(atypical) belong to? EM (``models.adaptation.em_prior``) on labelled figures
the model did not train on, started from each candidate source prior, against their true prevalence: the
right source prior is the one whose EM estimate lands on it (docs/TRUST.md, mitotype adapt).

    python scripts/adapt_source_prior.py --model default --data amibr:../shared/data/amibr:split=test
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default="amibr:../shared/data/amibr:split=test")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from mitotype.data.images import load_images
    from mitotype.data.spec import load_figures
    from mitotype.data.splits import group_holdout
    from mitotype.models import adaptation as A
    from mitotype.models.inference import predict_proba
    from mitotype.models.modelfile import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    figures = load_figures(args.data)
    labels = np.array([f.label for f in figures])
    probs = predict_proba([model], load_images(figures, model.config.model.crop_size), backend="torch")
    extra = model.meta.get("extra") or {}
    candidates = {"0.5 (balanced class weights)": 0.5}
    if extra.get("data_spec"):  # the training part's prevalence, rebuilt from the model file's data record
        train = load_figures(extra["data_spec"])
        if not extra.get("val_spec"):
            idx, _ = group_holdout(train, model.config.train.val_fraction, model.config.train.seed)
            train = [train[i] for i in idx]
        candidates[f"training prevalence ({len(train)} figures)"] = float(np.mean([f.label for f in train]))
    print(f"{args.data}: {len(labels)} figures, true prevalence {labels.mean():.3f}, mean P(atypical) "
          f"{probs.mean():.3f}")
    for name, prior in candidates.items():
        estimate, iterations = A.em_prior(probs, prior)
        print(f"  source prior {prior:.3f} = {name}: EM estimate {estimate:.3f} ({iterations} iterations)")


if __name__ == "__main__":
    main()
