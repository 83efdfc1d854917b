"""The fastText example's committed corpus is what its generator makes (the test data's fingerprint is
what verify-data checks, so it must not change by accident)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fasttext-classifier"


def test_committed_corpus_is_the_generators_output(tmp_path):
    spec = importlib.util.spec_from_file_location("fasttext_corpus", EXAMPLE / "corpus.py")
    assert spec and spec.loader
    corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpus)
    corpus.main(tmp_path)
    for name in ("train.csv", "test.csv"):
        assert (tmp_path / name).read_bytes() == (EXAMPLE / "data" / name).read_bytes(), (
            f"examples/fasttext-classifier/data/{name} drifted: run `python corpus.py` there"
        )
    lines = (EXAMPLE / "data" / "test.csv").read_text().splitlines()
    assert lines[0] == "text,label" and len(lines) == 151
