"""Fingerprint throughput and memory: mlflow_ext.data.fingerprint against sha256sum on the same bytes.

A folder of BENCH_FINGERPRINT_GB gigabytes (default 2) in 16 files of random bytes is generated in a
temporary directory and read once so both tools start from a warm page cache. Each tool then runs as its
own process, three times, alternating; the best wall time counts (process start included for both).
Peak RSS is the child's VmHWM (not measured for sha256sum under xargs: several processes). The
fingerprint is checked against sha256sum's output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FILES = 16
REPEATS = 3

# Runs a command, prints its wall time, peak RSS (kB) and stdout as JSON. The peak is the child's own
# VmHWM, polled until it exits: ru_maxrss of a child would also count the image it was forked from.
_MEASURE = """
import json, subprocess, sys, tempfile, time
def hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
with tempfile.TemporaryFile() as out:
    start = time.perf_counter()
    child = subprocess.Popen(sys.argv[1:], stdout=out)
    peak = 0
    while child.poll() is None:
        peak = max(peak, hwm(child.pid))
        time.sleep(0.005)
    seconds = time.perf_counter() - start
    if child.returncode:
        sys.exit(child.returncode)
    out.seek(0)
    print(json.dumps({"seconds": seconds, "peak_kb": peak, "stdout": out.read().decode()}))
"""

_FINGERPRINT = (
    "import sys; from mlflow_ext.data import fingerprint; print(fingerprint(sys.argv[1]).fingerprint)"
)


def _measure(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _generate(folder: Path, total: int) -> list[Path]:
    folder.mkdir(parents=True)
    per_file = total // FILES
    block = 4 << 20
    paths = []
    for index in range(FILES):
        path = folder / f"part-{index:05d}.bin"
        with open(path, "wb") as handle:
            left = per_file
            while left:
                chunk = os.urandom(min(block, left))
                handle.write(chunk)
                left -= len(chunk)
        paths.append(path)
    return paths


def _warm(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while handle.read(8 << 20):
                pass


def _best(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["seconds"])


def _manifest_fingerprint(sha256sum_output: str, folder: Path) -> str:
    lines = []
    for line in sha256sum_output.splitlines():
        digest, path = line.split(None, 1)
        lines.append((os.path.relpath(path.strip().lstrip("*"), folder), digest))
    manifest = "".join(f"{digest}  {name}\n" for name, digest in sorted(lines))
    return "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


def run(results_dir: Path) -> list[dict]:
    gigabytes = float(os.environ.get("BENCH_FINGERPRINT_GB", "2"))
    total = int(gigabytes * (1 << 30)) // FILES * FILES
    workdir = Path(tempfile.mkdtemp(prefix="bench-fingerprint-"))
    try:
        folder = workdir / "data"
        paths = _generate(folder, total)
        _warm(paths)
        ours_cmd = [sys.executable, "-c", _FINGERPRINT, str(folder)]
        sha_cmd = ["sha256sum", *map(str, paths)]
        cpus = os.cpu_count() or 1
        parallel_cmd = [
            "bash",
            "-c",
            f'printf "%s\\0" "$@" | xargs -0 -P {cpus} -n {max(1, FILES // cpus)} sha256sum',
            "_",
            *map(str, paths),
        ]
        ours, sha, parallel = [], [], []
        for _ in range(REPEATS):
            ours.append(_measure(ours_cmd))
            sha.append(_measure(sha_cmd))
            parallel.append(_measure(parallel_cmd))
        best_ours, best_sha, best_parallel = _best(ours), _best(sha), _best(parallel)
        expected = _manifest_fingerprint(best_sha["stdout"], folder)
        if best_ours["stdout"].strip() != expected:
            raise RuntimeError(
                f"fingerprint {best_ours['stdout'].strip()} differs from sha256sum's {expected}"
            )

        # The same tool on an eighth of the data: peak memory must not follow the size.
        small = workdir / "small"
        small.mkdir()
        for path in paths[: FILES // 8]:
            os.link(path, small / path.name)
        small_peak = _measure([sys.executable, "-c", _FINGERPRINT, str(small)])["peak_kb"] / 1024
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    megabytes = total / 1e6

    def rate(measured: dict) -> float:
        return megabytes / measured["seconds"]

    ours_peak, sha_peak = best_ours["peak_kb"] / 1024, best_sha["peak_kb"] / 1024
    size = f"{gigabytes:g} GB in {FILES} files"
    details = {
        "bytes": total,
        "files": FILES,
        "cpus": cpus,
        "fingerprint_seconds": [r["seconds"] for r in ours],
        "sha256sum_seconds": [r["seconds"] for r in sha],
        "sha256sum_parallel_seconds": [r["seconds"] for r in parallel],
        "fingerprint_peak_rss_mb": ours_peak,
        "fingerprint_peak_rss_mb_at_one_eighth": small_peak,
        "sha256sum_peak_rss_mb": sha_peak,
    }
    Path(results_dir, "fingerprint.json").write_text(json.dumps(details, indent=2) + "\n")
    note = (
        "fingerprint: mlflow_ext.data.fingerprint in a new Python process (start-up and imports included), "
        f"{min(4, cpus)} hashing threads; best of {REPEATS}, warm page cache; peak RSS "
        f"{small_peak:.0f} MB at 1/8 of the data vs {ours_peak:.0f} MB at all of it"
    )
    return [
        {
            "section": "fingerprint",
            "measure": f"throughput MB/s, {size}, vs sha256sum",
            "platform": rate(best_ours),
            "baseline": rate(best_sha),
            "ratio": rate(best_ours) / rate(best_sha),
            "note": note,
        },
        {
            "section": "fingerprint",
            "measure": f"throughput MB/s, {size}, vs sha256sum under xargs -P {cpus}",
            "platform": rate(best_ours),
            "baseline": rate(best_parallel),
            "ratio": rate(best_ours) / rate(best_parallel),
            "note": note,
        },
        {
            "section": "fingerprint",
            "measure": f"peak RSS MB, {size}, vs sha256sum",
            "platform": ours_peak,
            "baseline": sha_peak,
            "ratio": sha_peak / ours_peak,
            "note": note,
        },
    ]
