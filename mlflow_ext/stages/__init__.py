"""Stage commands of the GoCD pipelines, usable outside GoCD too (see gocd/README.md, "Stage commands").

One module per command: ``register`` (build), ``verify_data``, ``evaluate``, ``deploy`` (a package of
pluggable targets) and ``smoke_test``; ``common`` resolves the model version a stage works on from
options or the variables the bridge passes (MLFLOW_MODEL_NAME, MLFLOW_MODEL_VERSION, ...). Library
code: a stage that finds the candidate unfit raises StageFailed, bad input raises ConfigError.
"""
