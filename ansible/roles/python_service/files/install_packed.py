"""Build a wheel from a packed source tar and install it (python_service role, run by the venv's python).

The sources are unpacked into a temporary directory, built there into a wheel (`pip wheel --no-deps`), and the
wheel is installed with --no-deps --force-reinstall; nothing is built in a source tree, and the temporary
directory is removed afterwards.

    VENV/bin/python install_packed.py --tar SRC_DIR/NAME.tar --name NAME
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tar", required=True, type=Path)
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    pip = [sys.executable, "-m", "pip", "--no-input", "--quiet", "--disable-pip-version-check"]
    with tempfile.TemporaryDirectory(prefix=f"{args.name}-build-") as tmp:
        src, wheels = Path(tmp) / "src", Path(tmp) / "wheels"
        with tarfile.open(args.tar) as tar:
            # Our own tar (pack_sources.py); the "data" filter where this Python has it.
            extract = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(src, **extract)  # noqa: S202 (our own tar)
        build = ["wheel", "--no-deps", "--wheel-dir", str(wheels), str(src)]
        subprocess.run([*pip, *build], check=True, cwd=tmp)
        built = sorted(wheels.glob("*.whl"))
        if len(built) != 1:
            raise SystemExit(f"expected one wheel from {args.tar}, got {[w.name for w in built]}")
        install = ["install", "--no-deps", "--force-reinstall", str(built[0])]
        subprocess.run([*pip, *install], check=True, cwd=tmp)
        print(f"installed {built[0].name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
