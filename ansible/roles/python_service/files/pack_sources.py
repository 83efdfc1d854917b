"""Pack a local package's own files into a reproducible tar (python_service role, run on the controller).

Only the package's own files go in: no bytecode caches (__pycache__, *.pyc), no build output (build/ and
dist/ at the top of the source directory, *.egg-info anywhere), no tool caches. Every entry has mtime 0, owner
0 and mode 0644 or 0755, in sorted order, so the same sources always give the same bytes whatever ran in the
checkout (tests, builds, a touch). The tar is written to OUT_DIR/NAME-SHA.tar (kept while the sources do not
change; older tars of NAME are removed) and its path and sha256 are printed as JSON.

    python3 pack_sources.py --name mlflow-ext --src DIR --out-dir DIR [PATH ...]

PATH: entries of the source directory to pack (default: all of it).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".nox", ".venv"}
SKIP_TOP_DIRS = {"build", "dist"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info", "~")


def own_files(src: Path, paths: list[str]) -> Iterator[Path]:
    """The package's own files under SRC, as paths relative to SRC."""
    for entry in paths or [""]:
        root = src / entry
        if root.is_file():
            yield root.relative_to(src)
            continue
        if not root.is_dir():
            raise SystemExit(f"{root} does not exist")
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            top = here == src
            dirnames[:] = [
                d
                for d in dirnames
                if d not in SKIP_DIRS and not d.endswith(SKIP_SUFFIXES) and not (top and d in SKIP_TOP_DIRS)
            ]
            for name in filenames:
                if not name.endswith(SKIP_SUFFIXES) and (here / name).is_file():
                    yield (here / name).relative_to(src)


def pack(src: Path, paths: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for relative in sorted(set(own_files(src, paths)), key=str):
            path = src / relative
            data = path.read_bytes()
            info = tarfile.TarInfo(str(relative))
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--src", required=True, type=Path)
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("paths", nargs="*")
    args = parser.parse_args(argv)
    data = pack(args.src.resolve(), args.paths)
    digest = hashlib.sha256(data).hexdigest()
    args.out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    out = args.out_dir / f"{args.name}-{digest}.tar"
    if not out.exists():
        staging = out.with_suffix(".tmp")
        staging.write_bytes(data)
        staging.replace(out)
    for old in args.out_dir.glob(f"{args.name}-*.tar"):
        if old != out and len(old.name) == len(out.name):
            old.unlink(missing_ok=True)
    json.dump({"path": str(out), "sha256": digest}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
