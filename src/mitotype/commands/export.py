"""Export a model's classification path to ONNX (verified with onnx.checker).

The graph's input "image" is float32 (N, 3, S, S): RGB scaled to [0, 1], normalised with the model's
mean/std, at its input size S, any batch size. Outputs: "logits" (N, 2) [normal, atypical] and
"p_atypical" (N,). The preprocessing, microns per pixel, crop size and threshold are stored in the file's
metadata (metadata_props).

With --int8 SPEC: a static int8 (QDQ) graph instead, per-channel int8 weights, activation ranges
calibrated (percentile) on 320 figures of SPEC chosen with seed 0 -- training crops, never the test set.
On the AMi-Br test split it lost 0.0019 AUROC against float32 and ran 2x faster here (docs/PERFORMANCE.md);
probabilities move by up to 0.19, so it is an option, not the default.

Examples:
  mitotype export --model default --onnx mitotype.onnx
  mitotype export --model default --onnx mitotype-int8.onnx --int8 amibr:../shared/data/amibr:split=train
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", metavar="M",
                        help="model file (.pt) or 'default' (the model shipped with mitotype; the default)")
    parser.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write")
    parser.add_argument("--opset", type=int, default=17, metavar="N",
                        help="ONNX opset version, 13 to 23 (default 17)")
    parser.add_argument("--int8", metavar="SPEC",
                        help="write a static int8 QDQ graph calibrated on 320 figures of this data spec "
                             "(training crops, e.g. amibr:PATH:split=train)")


def run(args: argparse.Namespace) -> int:
    from mitotype.errors import MitotypeError
    from mitotype.io import check_output_file
    from mitotype.models.modelfile import load_model
    from mitotype.models.onnx import export_onnx

    if not 13 <= args.opset <= 23:
        raise MitotypeError(f"--opset {args.opset}: supported opsets are 13 to 23")
    check_output_file(args.onnx, "--onnx").parent.mkdir(parents=True, exist_ok=True)
    loaded = load_model(args.model)
    if args.int8:
        import tempfile
        from pathlib import Path

        from mitotype.models.int8 import calibration_batch, quantise_int8

        with tempfile.TemporaryDirectory(prefix="mitotype-export-") as tmp:
            fp32 = export_onnx(loaded, Path(tmp) / "fp32.onnx", opset=args.opset)
            path = quantise_int8(fp32, args.onnx, calibration_batch(loaded, args.int8),
                                 seed_note=f"of {args.int8} (seed 0)")
    else:
        path = export_onnx(loaded, args.onnx, opset=args.opset)
    print(f"wrote {path}")
    return 0
