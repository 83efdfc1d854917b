"""`make bench`: run every benchmark, write results/bench.md and results/bench.png."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

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


def main() -> int:
    results = Path(os.environ.get("BENCH_RESULTS_DIR", "results"))
    results.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for section in SECTIONS:
        module = importlib.import_module(f"tests.bench.{section}")
        print(f"== {section}", flush=True)
        rows.extend(module.run(results))
    table = render_markdown(rows)
    (results / "bench.md").write_text(table)
    render_chart(rows, results / "bench.png")
    print(table)
    print(f"written: {results / 'bench.md'}, {results / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
