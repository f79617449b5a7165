"""The hostile-input corpus: bad inputs made at test time and what every tool must do with them.

``corpus.py`` holds the :class:`~tests.hostile.corpus.Case` type, the runner that checks the guarantees every
case shares (exit status, a last stderr line that names the file, no traceback, no file outside the output
folder changed, no hang) and the README table (``python -m tests.hostile.corpus``). The cases themselves are
one module per tool group: ``build_cases.py`` (stage 0), ``train_cases.py`` (stage 1 training),
``eval_cases.py`` (retrieval / zero-shot / export) and ``vlm_cases.py`` (GeoChat tools); ``files.py`` makes
the bad files.
"""
