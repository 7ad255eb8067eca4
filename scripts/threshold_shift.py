"""Which decision threshold holds under shift? Every finished leave-one-source-out run in results/, re-decided.

Issue 12's threshold lever, measured without training anything: each run's stored P(atypical) on its
held-out source (``eval/predictions.csv``) is decided by

- ``stored``: the run's own threshold, tuned for balanced accuracy on its in-domain validation part (what
  the model file ships; the reference);
- ``0.5``: the fixed rule; training weighs the classes equally, so P(atypical) is a posterior for a 50 %
  prior and 0.5 is the balanced-accuracy rule if it is calibrated;
- ``train share``: label-free and adaptive: the threshold that calls the same share of the held-out
  batch atypical as the training part's prevalence (``train.csv``), i.e. a quantile of the target's P;
- ``oracle``: the best threshold on the test labels themselves, a ceiling that no deployable rule reaches.

Runs are grouped by experiment, config and held-out source; the seeds of a group are paired on the same
figures, and Δ (rule − stored) has a two-stage bootstrap interval over slides and seeds
(``metrics.paired_bootstrap``). The ``train share`` threshold is computed once on the whole held-out set
(not again inside each bootstrap replicate), so its interval is slightly narrow. Runs copied into two
experiments (one reference run serving both) are counted once.

    python scripts/threshold_shift.py --out results/threshold_shift
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

RULES = ("0.5", "train share", "oracle")


def read_run(run: Path) -> dict:
    rows = list(csv.DictReader((run / "eval" / "predictions.csv").open()))
    train = [int(r["label"]) for r in csv.DictReader((run / "train.csv").open())]
    return {"labels": np.array([int(r["label"]) for r in rows]),
            "probs": np.array([float(r["p_atypical"]) for r in rows]),
            "groups": [r["group"] for r in rows], "paths": [r["path"] for r in rows],
            "threshold": json.loads((run / "eval" / "metrics.json").read_text())["threshold"],
            "train_prevalence": float(np.mean(train))}


def thresholds(run: dict) -> dict[str, float]:
    from mitotype.train.threshold import tune_threshold

    p = run["probs"]
    # calls the training prevalence's share of figures atypical (predict_class: p >= threshold)
    share = float(np.quantile(p, 1.0 - run["train_prevalence"]))
    return {"stored": run["threshold"], "0.5": 0.5, "train share": share, "oracle": tune_threshold(run["labels"], p)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()

    from mitotype.io import write_json, write_text
    from mitotype.metrics import paired_bootstrap, point_metrics

    groups: dict[tuple, list[Path]] = defaultdict(list)
    for pred in sorted(args.results.glob("*/runs/*/lodo/*/seed*/eval/predictions.csv")):
        run = pred.parent.parent
        experiment = run.relative_to(args.results).parts[0]
        groups[(experiment, run.parts[-4], run.parts[-2])].append(run)

    rows, seen = [], {}
    for (experiment, config, source), runs in sorted(groups.items()):
        data = [read_run(r) for r in runs]
        key = tuple(hash(d["probs"].tobytes()) for d in data)
        if key in seen:  # the same runs copied into a second experiment (one reference run serves both)
            print(f"{experiment}/{config}/{source}: the runs of {seen[key]}, counted once")
            continue
        seen[key] = f"{experiment}/{config}/{source}"
        if any(d["paths"] != data[0]["paths"] for d in data):
            raise SystemExit(f"{experiment}/{config}/{source}: seeds tested on different figures")
        y, g = data[0]["labels"], data[0]["groups"]
        probs = np.stack([d["probs"] for d in data])
        per_run = [thresholds(d) for d in data]
        thr = {name: np.array([t[name] for t in per_run])[:, None] for name in ("stored",) + RULES}
        row = {"experiment": experiment, "config": config, "held_out": source, "seeds": len(runs),
               "n": len(y), "train_prevalence": float(np.mean([d["train_prevalence"] for d in data]))}
        for name, t in thr.items():
            per_seed = [point_metrics(y, probs[s], float(t[s, 0])) for s in range(len(runs))]
            row[name] = {k: float(np.mean([m[k] for m in per_seed]))
                         for k in ("balanced_accuracy", "sensitivity", "specificity")}
            row[name]["threshold"] = float(np.mean(t))
            if name != "stored":
                r = paired_bootstrap(y, probs, probs, t, thr["stored"], groups=g, n_boot=args.n_boot)
                row[name]["delta_balanced_accuracy"] = {"delta": r["delta"], "ci": r["ci"]}
        rows.append(row)
        print(experiment, config, source, {k: round(row[k]["balanced_accuracy"], 3) for k in ("stored",) + RULES})

    write_json(args.out / "results.json", {"n_boot": args.n_boot, "groups": rows})
    write_text(args.out / "results.md", table(rows))
    print(table(rows))


def table(rows: list[dict]) -> str:
    def cell(r: dict, name: str) -> str:
        m = r[name]
        text = f"{m['balanced_accuracy']:.3f} ({m['sensitivity']:.2f} / {m['specificity']:.2f})"
        if name != "stored":
            d = m["delta_balanced_accuracy"]
            text += f", Δ {d['delta']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
        return text

    lines = ["Balanced accuracy (sensitivity / specificity) on the held-out source; Δ = rule − stored, paired "
             "slide-and-seed bootstrap 95 % interval.", "",
             "| experiment / config | held out | seeds | stored | 0.5 | train share | oracle (ceiling) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['experiment']} / {r['config']} | {r['held_out']} | {r['seeds']} | "
                     + " | ".join(cell(r, n) for n in ("stored",) + RULES) + " |")
    summary = {n: [r[n]["delta_balanced_accuracy"]["delta"] for r in rows] for n in RULES}
    lines += ["", "| rule | mean Δ over groups | groups above / below stored (interval excludes 0) |", "|---|---|---|"]
    for n in RULES:
        up = sum(r[n]["delta_balanced_accuracy"]["ci"][0] > 0 for r in rows)
        down = sum(r[n]["delta_balanced_accuracy"]["ci"][1] < 0 for r in rows)
        lines.append(f"| {n} | {np.mean(summary[n]):+.3f} (sd {np.std(summary[n]):.3f}, {len(rows)} groups) | "
                     f"{up} / {down} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
