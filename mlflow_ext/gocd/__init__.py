"""GoCD: the REST client the bridge schedules with, and the generator of YAML config-repo pipelines."""
