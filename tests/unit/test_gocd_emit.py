"""The YAML writer: reads back to the same data with PyYAML, and yamllint accepts its layout."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import yaml

from mlflow_ext.gocd import emit

TRICKY = [
    "", " ", "yes", "No", "on", "OFF", "y", "n", "true", "null", "~", "Null", "1", "1.5", "0o17", "0x1f",
    "1_000", "1e3", ".5", "-", "--model", "- x", "a: b", "a #b", "#x", "x#", "@x", "`x", "!tag", "&a", "*a",
    "|", ">", "%x", "{x}", "[x]", "'q'", '"q"', "back\\slash", "tab\there", "new\nline", "trailing ",
    " leading", "ünïcödé", "emoji \U0001f600", "nul\x00byte", "bell\x07", "del\x7f", "nel\x85", "ls\u2028",
    "bom\ufeff", "${COUNT}", "#{param}", "{{SECRET:[a][b]}}", "2024-01-01", "12:30", "<<", "=",
    "python train.py", "/bin/sh", "http://x:1/y", "a,b", "?x", "x?", "a - b",
]  # fmt: skip


@pytest.mark.parametrize("text", TRICKY)
def test_strings_read_back_unchanged(text):
    document = {"key": text, "list": [text], text or "k": 1}
    assert yaml.safe_load(emit.dump(document)) == document


def test_random_documents_read_back_unchanged():
    rng = random.Random(7)
    alphabet = "ab -_:#{}[]'\"\\\n\t$%@!&*|>?,.0123456789yYnN\x01\u00e9\u2028\U0001f600"

    def text():
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))

    def value(depth):
        kind = rng.randint(0, 6 if depth < 3 else 3)
        if kind == 0:
            return text()
        if kind == 1:
            return rng.randint(-5, 5)
        if kind == 2:
            return rng.choice([True, False, None])
        if kind == 3:
            return text()
        if kind in (4, 5):
            return {text() + str(i): value(depth + 1) for i in range(rng.randint(0, 3))}
        return [value(depth + 1) for _ in range(rng.randint(0, 3))]

    for _ in range(300):
        document = {"root": value(0), "other": [value(1), {"k": value(1)}]}
        assert yaml.safe_load(emit.dump(document)) == document


def test_layout_passes_yamllint(tmp_path):
    tasks = [{"exec": {"command": "x"}}, [["nested"]]]
    stages = [{"build": {"jobs": {"j": {"tasks": tasks}}}}]
    document = {"pipelines": {"p": {"stages": stages, "empty": {}, "none": []}}}
    path = tmp_path / "out.yaml"
    path.write_text(emit.dump(document, "a header\nsecond line"))
    config = "{extends: default, rules: {line-length: {max: 120}}}"
    subprocess.run([sys.executable, "-m", "yamllint", "-s", "-d", config, str(path)], check=True)
    assert path.read_text().startswith("# a header\n# second line\n---\n")


def test_refuses_other_types():
    with pytest.raises(TypeError):
        emit.dump({"x": object()})
