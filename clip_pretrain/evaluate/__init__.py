"""Stage-1 evaluation: image-text retrieval recall@k (faiss, any size), zero-shot scene classification, and the suite.

* :mod:`~clip_pretrain.evaluate.recall`: ``recall_at_k`` (RemoteCLIP's metric, batched faiss search, clip_benchmark's
  tie rule);
* :mod:`~clip_pretrain.evaluate.eval_sets`: eval sets from a Karpathy caption json or stage-0 shards;
* :mod:`~clip_pretrain.evaluate.embedding`: encode images and texts;
* :mod:`~clip_pretrain.evaluate.common`: the drivers' error type, model checks and loading;
* :mod:`~clip_pretrain.evaluate.retrieval` (with :mod:`~clip_pretrain.evaluate.retrieval_report`, its HTML report):
  ``evaluate_retrieval``;
* :mod:`~clip_pretrain.evaluate.zeroshot`: ``evaluate_zeroshot`` on ``<class>/<image>`` folders;
* the suite (RemoteCLIP's tables): :mod:`~clip_pretrain.evaluate.suite` (``run_suite``, the driver),
  :mod:`~clip_pretrain.evaluate.suite_file` (the YAML list of datasets), :mod:`~clip_pretrain.evaluate.suite_tasks`
  (one ``run_*`` per kind of data), :mod:`~clip_pretrain.evaluate.feature_cache` (each image embedded once per
  checkpoint), :mod:`~clip_pretrain.evaluate.class_splits` (8:2 by sorted name), :mod:`~clip_pretrain.evaluate.probes`
  (linear probe, k-NN, few-shot), :mod:`~clip_pretrain.evaluate.counting`, :mod:`~clip_pretrain.evaluate.paper_numbers`
  and :mod:`~clip_pretrain.evaluate.suite_report` (suite.md / suite.html).

Command lines: ``launch/eval_retrieval.py``, ``launch/eval_zeroshot.py`` and ``launch/eval_suite.py``.
"""

from clip_pretrain.evaluate.common import EvalError
from clip_pretrain.evaluate.embedding import encode_images, encode_texts
from clip_pretrain.evaluate.eval_sets import EvalItem, EvalSet, load_karpathy_eval_set, load_shard_eval_set
from clip_pretrain.evaluate.recall import recall_at_k, slow_recall_at_k
from clip_pretrain.evaluate.retrieval import RetrievalEvalConfig, evaluate_retrieval
from clip_pretrain.evaluate.zeroshot import (
    DEFAULT_TEMPLATES,
    ZeroShotConfig,
    evaluate_zeroshot,
    normalise_class_name,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "EvalError",
    "EvalItem",
    "EvalSet",
    "RetrievalEvalConfig",
    "ZeroShotConfig",
    "encode_images",
    "encode_texts",
    "evaluate_retrieval",
    "evaluate_zeroshot",
    "load_karpathy_eval_set",
    "load_shard_eval_set",
    "normalise_class_name",
    "recall_at_k",
    "slow_recall_at_k",
]
