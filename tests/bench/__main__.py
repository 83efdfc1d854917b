"""`make bench`: run every benchmark, write results/bench.md and results/bench.png."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from mlflow_ext import progress

DEFAULT_SECTIONS = "server,tracking_store,search,fingerprint,auth,bridge,gocd"
SECTIONS = [name for name in os.environ.get("BENCH_SECTIONS", DEFAULT_SECTIONS).split(",") if name]


def render_markdown(rows: list[dict]) -> str:
    lines = [
        "| section | measure | platform | baseline | ratio (>1 = platform better) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['section']} | {row['measure']} | {row['platform']:.2f} | {row['baseline']:.2f} "
            f"| {row['ratio']:.2f}x |"
        )
    notes = sorted({row["note"] for row in rows if row.get("note")})
    return "\n".join(lines) + "\n" + "".join(f"\n- {note}" for note in notes) + "\n"


def render_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.6 * len(rows) + 1.5))
    labels = [f"{r['section']}: {r['measure']}" for r in rows]
    ratios = [r["ratio"] for r in rows]
    ax.barh(labels, ratios, color=["tab:green" if r >= 1 else "tab:red" for r in ratios])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.xaxis.set_major_locator(FixedLocator([0.1, 0.25, 0.5, 1, 2, 4, 10]))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _pos: f"{x:g}x"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("ratio against the baseline run side by side (>1 = platform better)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_sections(sections: list[str], results: Path, package: str = "tests.bench") -> list[dict]:
    """Every section's rows. Which section runs and how long it took go to stderr: a line at its start and
    at its end, and one a minute in between; whole lines, as the sections print lines of their own."""
    rows: list[dict] = []
    for number, section in enumerate(sections, 1):
        with progress.task(f"bench {number}/{len(sections)}: {section}", delay=0, interval=60, plain=True):
            module = importlib.import_module(f"{package}.{section}")
            rows.extend(module.run(results))
    return rows


def main() -> int:
    results = Path(os.environ.get("BENCH_RESULTS_DIR", "results"))
    results.mkdir(parents=True, exist_ok=True)
    rows = run_sections(SECTIONS, results)
    table = render_markdown(rows)
    (results / "bench.md").write_text(table)
    render_chart(rows, results / "bench.png")
    print(table)
    print(f"written: {results / 'bench.md'}, {results / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
