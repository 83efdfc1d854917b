"""The fastText example against the real platform: `train.py` trains and logs a pyfunc, which loads back
and predicts with the numpy its requirements pin (numpy 2 here, where fastText's own `predict()` fails).

Bounded: one training run (single-threaded fastText on 600 short texts, seconds) and one model load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.environ import patched_environ
from tests.support.services import Platform

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "fasttext-classifier"

fasttext = pytest.importorskip("fasttext", reason="fasttext-wheel is in requirements/dev.txt")


@pytest.fixture(scope="module")
def trained(platform: Platform) -> dict:
    env = {
        **os.environ,
        **platform.client_env(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_EXPERIMENT_NAME": f"fasttext-{uuid.uuid4().hex[:8]}",
    }
    for key in [key for key in env if key.startswith("GO_")]:
        del env[key]
    result = subprocess.run(
        [sys.executable, "train.py"], cwd=EXAMPLE, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_logged_pyfunc_predicts_with_the_pinned_numpy(platform, trained, tmp_path):
    import mlflow
    import numpy as np
    import pandas as pd

    test = pd.read_csv(EXAMPLE / "data" / "test.csv")
    with patched_environ(platform.client_env()):  # never mlflow.set_tracking_uri: it outlives the test
        # Downloaded once, here: given the URI, load_model and get_model_dependencies would each leave a
        # copy of the model (150 MB) in a temporary directory of their own.
        local = mlflow.artifacts.download_artifacts(
            f"runs:/{trained['run_id']}/model", dst_path=str(tmp_path)
        )
        model = mlflow.pyfunc.load_model(local)
        predicted = model.predict(test[["text"]])
        run = mlflow.get_run(trained["run_id"])
        requirements = mlflow.pyfunc.get_model_dependencies(local)
    assert len(predicted) == len(test)
    assert set(predicted) <= {"billing", "shipping", "technical"}
    accuracy = float((np.asarray(predicted) == test["label"].to_numpy()).mean())
    assert accuracy == pytest.approx(trained["metrics"]["test_accuracy"])
    assert accuracy > 0.9
    assert run.data.params["wordNgrams"] == "2"
    pinned = Path(requirements).read_text().split()
    assert f"numpy=={np.__version__}" in pinned
    assert any(line.startswith("fasttext-wheel==") for line in pinned)


def test_fasttexts_own_predict_is_what_the_wrapper_avoids(trained, tmp_path):
    """Why the wrapper exists: under numpy 2 fastText's predict() raises; the wrapper's path does not."""
    import numpy as np

    sys.path.insert(0, str(EXAMPLE))
    try:
        from fasttext_model import predict_labels
    finally:
        sys.path.remove(str(EXAMPLE))
    corpus = tmp_path / "train.txt"
    corpus.write_text("__label__a good fine\n__label__b bad poor\n" * 20)
    model = fasttext.train_supervised(str(corpus), epoch=5, thread=1, seed=0, verbose=0)
    if int(np.__version__.split(".")[0]) >= 2:
        with pytest.raises(ValueError, match="copy"):
            model.predict("good fine")
    assert predict_labels(model, ["good fine", "bad\npoor"]) == ["a", "b"]
