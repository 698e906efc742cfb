"""Keep the benchmark suite out of the default pytest run: it is started by ``run.py``."""

collect_ignore_glob = ["*.py"]
