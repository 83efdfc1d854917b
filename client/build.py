"""Build the client wheel (client/pyproject.toml) into dist/: `make client`.

The package's sources stay where they are: they are copied with this pyproject into a temporary folder (no
caches, no build leftovers) and pip builds the wheel there, so the server's distribution (../pyproject.toml)
and this one never share a build directory.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlflow-platform-client-") as tmp:
        stage = Path(tmp)
        shutil.copy(ROOT / "client" / "pyproject.toml", stage / "pyproject.toml")
        shutil.copytree(
            ROOT / "mlflow_ext",
            stage / "mlflow_ext",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
        )
        wheels = stage / "wheels"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(wheels), str(stage)],
            check=True,
        )  # fmt: skip
        (wheel,) = wheels.glob("mlflow_platform_client-*.whl")
        target = out / wheel.name
        shutil.copy(wheel, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder of the wheel (default dist/)")
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
