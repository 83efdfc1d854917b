"""Make the example's data: subscription customers who stay or leave, written to data/*.csv.

    python dataset.py         # rewrites data/train.csv and data/test.csv (the same bytes every time)

Each customer has a tenure in months, a monthly charge, a count of support calls in the last quarter and a
contract (``monthly``, ``annual`` or ``two-year``). Whether they leave is drawn from a logistic model of
those columns with a fixed seed, so the classes overlap and no classifier scores a perfect 1.0. The files are
committed (400 training rows, 100 test rows): the release pipeline's ``verify-data`` compares the test file it
checks out with the fingerprint the training run recorded, and tests/unit/test_example_spark.py fails when
the committed files drift from this script.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 23
COLUMNS = ("tenure_months", "monthly_charge", "support_calls", "contract", "churn")
CONTRACTS = {"monthly": 1.2, "annual": -0.4, "two-year": -1.5}  # effect on the log-odds of leaving


def customer(rng: random.Random) -> tuple[int, float, int, str, str]:
    contract = rng.choices(sorted(CONTRACTS), weights=(3, 5, 2))[0]
    tenure = rng.randint(1, 72)
    charge = round(rng.uniform(15.0, 120.0), 2)
    calls = min(int(rng.expovariate(0.8)), 9)
    odds = -0.9 + CONTRACTS[contract] - 0.045 * tenure + 0.02 * (charge - 60) + 0.55 * calls
    leaves = rng.random() < 1 / (1 + math.exp(-odds))
    return tenure, charge, calls, contract, "leaves" if leaves else "stays"


def write(path: Path, rows: list[tuple[int, float, int, str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)


def main(folder: Path = HERE / "data") -> None:
    rng = random.Random(SEED)  # noqa: S311 (made-up data, reproducible on purpose)
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "train.csv", [customer(rng) for _ in range(400)])
    write(folder / "test.csv", [customer(rng) for _ in range(100)])


if __name__ == "__main__":
    main()
