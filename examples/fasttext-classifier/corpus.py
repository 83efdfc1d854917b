"""Make the example's corpus: short support-ticket texts in three topics, written to data/*.csv.

    python corpus.py          # rewrites data/train.csv and data/test.csv (the same bytes every time)

Sentences are drawn from templates and word lists with a fixed seed, so the files are reproducible and
small (600 training rows, 150 test rows, columns ``text`` and ``label``). They are committed: the
release pipeline's ``verify-data`` compares the test file it checks out with the fingerprint the training
run recorded, and tests/unit/test_example_fasttext.py fails when the committed files drift from this script.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 17
TOPICS = {
    "billing": {
        "things": [
            "invoice",
            "refund",
            "charge",
            "payment",
            "subscription",
            "receipt",
            "credit card",
            "bill",
        ],
        "problems": ["was charged twice", "is wrong", "has not arrived", "shows the old price", "failed"],
        "asks": [
            "please refund me",
            "can you correct the amount",
            "cancel the renewal",
            "send a new invoice",
        ],
    },
    "shipping": {
        "things": ["parcel", "package", "delivery", "order", "courier", "tracking number", "shipment", "box"],
        "problems": ["is late", "never arrived", "was damaged", "went to the wrong address", "is stuck"],
        "asks": ["where is it", "please resend it", "change the delivery address", "when will it come"],
    },
    "technical": {
        "things": ["app", "login", "password", "website", "update", "error message", "sync", "screen"],
        "problems": ["keeps crashing", "does not load", "shows an error", "is very slow", "stopped working"],
        "asks": ["how do I fix it", "please reset it", "is there a workaround", "which version works"],
    },
}
OPENERS = ["hello", "hi team", "good morning", "dear support", "hey", ""]
TEMPLATES = [
    "{opener} my {thing} {problem} {ask}",
    "{opener} the {thing} {problem} since yesterday {ask}",
    "{thing} {problem} again {ask}",
    "{opener} {ask}",
    "{opener} i think my {thing} {problem} and {other} {problem2} {ask}",
]


def sentence(rng: random.Random, topic: str) -> str:
    words = TOPICS[topic]
    # One ticket in five mentions a thing of another topic (a refund for a damaged parcel): the classifier
    # has to weigh the problem and the ask too, and does not score a perfect 1.0.
    thing_topic = rng.choice(sorted(TOPICS)) if rng.random() < 0.2 else topic
    text = rng.choice(TEMPLATES).format(
        opener=rng.choice(OPENERS),
        thing=rng.choice(TOPICS[thing_topic]["things"]),
        other=rng.choice(words["things"]),
        problem=rng.choice(words["problems"]),
        problem2=rng.choice(words["problems"]),
        ask=rng.choice(words["asks"]),
    )
    return " ".join(text.split())


def rows(count: int, rng: random.Random) -> list[tuple[str, str]]:
    """``count`` tickets, topics in turn; one in twenty is filed under a random topic, as people do."""
    topics = sorted(TOPICS)
    found = []
    for index in range(count):
        topic = topics[index % len(topics)]
        text = sentence(rng, topic)
        found.append((text, rng.choice(topics) if rng.random() < 0.05 else topic))
    return found


def write(path: Path, data: list[tuple[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(data)


def main(folder: Path = HERE / "data") -> None:
    rng = random.Random(SEED)  # noqa: S311 (made-up data, reproducible on purpose)
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "train.csv", rows(600, rng))
    write(folder / "test.csv", rows(150, rng))


if __name__ == "__main__":
    main()
