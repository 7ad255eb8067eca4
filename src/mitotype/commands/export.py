"""Export a model's classification path to ONNX (verified with onnx.checker).

The graph's input "image" is float32 (N, 3, S, S): RGB scaled to [0, 1], normalised with the model's
mean/std, at its input size S, any batch size. Outputs: "logits" (N, 2) [normal, atypical] and
"p_atypical" (N,). The preprocessing, microns per pixel, crop size and threshold are stored in the file's
metadata (metadata_props).

Example:
  mitotype export --model default --onnx mitotype.onnx
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", metavar="M",
                        help="model file (.pt) or 'default' (the model shipped with mitotype; the default)")
    parser.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write")
    parser.add_argument("--opset", type=int, default=17, metavar="N",
                        help="ONNX opset version, 13 to 23 (default 17)")


def run(args: argparse.Namespace) -> int:
    from mitotype.errors import MitotypeError
    from mitotype.io import check_output_file
    from mitotype.models.modelfile import load_model
    from mitotype.predict.onnx import export_onnx

    if not 13 <= args.opset <= 23:
        raise MitotypeError(f"--opset {args.opset}: supported opsets are 13 to 23")
    check_output_file(args.onnx, "--onnx").parent.mkdir(parents=True, exist_ok=True)
    path = export_onnx(load_model(args.model), args.onnx, opset=args.opset)
    print(f"wrote {path}")
    return 0
