"""The generator-subset YAML reader: PyYAML's answer on everything it accepts, Unsupported otherwise."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from mlflow_ext.gocd import emit, fastyaml, validate

ROOT = Path(__file__).resolve().parents[2]
GENERATED = sorted(
    [
        *ROOT.glob("tests/contract/golden/gocd/*/*.gocd.yaml"),
        *ROOT.glob("gocd/examples/pipelines/*.gocd.yaml"),
    ]
)


@pytest.mark.parametrize("path", GENERATED, ids=lambda p: p.name)
def test_generated_files_take_the_fast_path_and_agree(path):
    text = path.read_text(encoding="utf-8")
    assert fastyaml.load(text) == yaml.safe_load(text)


def _random_document(rng: random.Random):
    alphabet = "ab -_:#{}[]'\\\"\n\t$%@!&*|>?,.0123456789yYnN\x01\u00e9\u2028\U0001f600/"

    def text():
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))

    def value(depth):
        kind = rng.randint(0, 7 if depth < 3 else 4)
        if kind in (0, 1):
            return text()
        if kind == 2:
            return rng.randint(-50, 50)
        if kind == 3:
            return rng.choice([True, False, None, "true", "null", "Yes", "mlflow-ext", "--data", "a b"])
        if kind == 4:
            return rng.choice(["data/test.csv", "/bin/sh", "x.y-z_1", "", "0", "-1", "007"])
        if kind in (5, 6):
            return {
                rng.choice(["exec", "k", "a b", text()]) + str(i): value(depth + 1)
                for i in range(rng.randint(0, 3))
            }
        return [value(depth + 1) for _ in range(rng.randint(0, 3))]

    return {"root": value(0), "list": [value(1), {"k": value(1)}]}


def test_random_documents_agree_with_pyyaml():
    rng = random.Random(11)
    fast = 0
    for _ in range(500):
        text = emit.dump(_random_document(rng), "header")
        expected = yaml.safe_load(text)
        try:
            assert fastyaml.load(text) == expected
            fast += 1
        except fastyaml.FastYamlUnsupported:
            pass
        assert validate.load_text(text) == expected
    assert fast > 100  # the subset is the common case


OUTSIDE = [
    "a: 1\n",  # no document start
    "---\na: {b: 1}\n",  # flow mapping
    "---\na: [1, 2]\n",
    "---\na: &x 1\nb: *x\n",  # anchors
    "---\na: 1 # comment\n",
    "---\na:\n\tb: 1\n",  # tab
    "---\na: Yes\n",
    "---\na: 0123\n",
    "---\na: 1.5\n",
    "---\na: 1\n\nb: 2\n",  # blank line
    "---\na: 1\n---\nb: 2\n",
    "---\na:1\n",
    "---\na:\n   b: 1\n",  # three spaces
    "---\na: 1\na: 2\n",  # duplicate key
    "---\n- - x\n",
    '---\na: "\\e"\n',
    "---\na: 'single'\n",
    "---\na: |\n  block\n",
    "---\ntrue: 1\n",
    "---\n? complex\n: key\n",
    "---\na:\nb: 1\n",  # empty value
    "---\n",
]


@pytest.mark.parametrize("text", OUTSIDE)
def test_outside_the_subset_falls_back_to_pyyaml(text):
    with pytest.raises(fastyaml.FastYamlUnsupported):
        fastyaml.load(text)
    try:
        expected = yaml.safe_load(text)
    except yaml.YAMLError:
        with pytest.raises(yaml.YAMLError):
            validate.load_text(text)
        return
    if text.count("a:") == 2 and "\na: 2" in text:
        with pytest.raises(yaml.YAMLError, match="duplicate key"):
            validate.load_text(text)
        return
    assert validate.load_text(text) == expected
