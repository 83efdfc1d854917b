"""The pyfunc around a fastText classifier, shipped with the model (``code_paths``).

fastText's own ``FastText.predict()`` builds its result with ``np.array(probs, copy=False)``, which numpy 2
refuses ("Unable to avoid copy while creating an array as requested"): a model served with numpy 2 crashed at
its first prediction. This wrapper calls the binding underneath (``model.f.multilinePredict``), which returns
plain lists and works with numpy 1 and 2 alike.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

PREFIX = "__label__"
TEXT = "text"


def predict_labels(model: Any, texts: list[str]) -> list[str]:
    """The top label of each text, without fastText's ``__label__`` prefix."""
    # fastText reads one text per line: a newline inside a text would split it.
    lines = [" ".join(str(text).split()) for text in texts]
    labels, _probabilities = model.f.multilinePredict(lines, 1, 0.0, "strict")
    return [found[0].removeprefix(PREFIX) if found else "" for found in labels]


class FastTextClassifier(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a ``text`` column (or a list of strings). Output: a list, one label per row."""

    def load_context(self, context: Any) -> None:
        import fasttext

        self.model = fasttext.load_model(context.artifacts["fasttext"])

    # model_input has no type hint on purpose: MLflow would read one as the model's input schema.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            texts = model_input[TEXT].tolist() if TEXT in model_input else model_input.iloc[:, 0].tolist()
        else:
            texts = list(model_input)
        # A plain list: the scoring server answers {"predictions": ["billing", ...]}, as the registered
        # model predicts here (a named Series would be served as records, [{"label": "billing"}, ...]).
        return predict_labels(self.model, texts)
