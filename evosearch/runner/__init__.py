"""Running a search on Ray: the driver, its workers, the run directory, re-ranking, progress.

- :mod:`.run_config`: the run config (``evosearch run CONFIG``) and its validation.
- :mod:`.driver`: the loop: ids, dedupe, probes, training, checkpoints, stopping.
- :mod:`.workers`: the Ray tasks that probe and train one candidate.
- :mod:`.run_directory`: ``runs/<name>/``: config, resolved tasks, append-only record log, checkpoint,
  best layers.
- :mod:`.lock`: one driver per run directory: a lock file with a heartbeat, safe on shared file systems.
- :mod:`.rerank`: retrain the top layers on held-out settings with several seeds.
- :mod:`.progress`: the live progress line and the search counters.
"""
