"""The benchmark of issue 6 (``python -m bench``; see ``bench/run.py`` and ``bench/README.md``)."""
