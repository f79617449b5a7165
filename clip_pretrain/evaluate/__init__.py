"""Stage-1 evaluation: image-text retrieval recall@k (faiss, any size) and zero-shot scene classification.

* :mod:`~clip_pretrain.evaluate.recall`: ``recall_at_k`` (RemoteCLIP's metric, batched faiss search, clip_benchmark's
  tie rule);
* :mod:`~clip_pretrain.evaluate.eval_sets`: eval sets from a Karpathy caption json or stage-0 shards;
* :mod:`~clip_pretrain.evaluate.embedding`: encode images and texts;
* :mod:`~clip_pretrain.evaluate.common`: the drivers' error type, model checks and loading;
* :mod:`~clip_pretrain.evaluate.retrieval` (with :mod:`~clip_pretrain.evaluate.retrieval_report`, its HTML report):
  ``evaluate_retrieval``;
* :mod:`~clip_pretrain.evaluate.zeroshot`: ``evaluate_zeroshot`` on ``<class>/<image>`` folders.

Command lines: ``launch/eval_retrieval.py`` and ``launch/eval_zeroshot.py``.
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
