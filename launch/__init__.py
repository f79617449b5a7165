"""Entry points: one short script per tool, all of one shape.

Each ``launch/<tool>.py`` parses the command line (plus ``--config`` YAML) into one typed config and calls one
function of a stage package with it; its ``main(argv)`` is also the tool's console script in ``pyproject.toml``
(``rs-build-shards``, ``rs-pretrain-clip``, ``rs-eval-retrieval``, ...). ``demo.py`` chains the stages by calling
the same Python functions with configs built in code. Scripts run from a plain checkout too
(``python launch/eval_retrieval.py --help``).
"""
