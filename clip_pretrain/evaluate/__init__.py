"""Stage-1 evaluation: image-text retrieval recall@k (faiss, any size) and zero-shot scene classification.

* :mod:`clip_pretrain.evaluate.retrieval`: ``recall_at_k`` (RemoteCLIP's metric, batched faiss search),
  eval sets from Karpathy caption json or stage-0 shards, embedding helpers, ``evaluate_retrieval``.
* :mod:`clip_pretrain.evaluate.zeroshot`: ``evaluate_zeroshot`` on ``<class>/<image>`` folders.

Command lines: ``launch/eval_retrieval.py`` and ``launch/eval_zeroshot.py``.
"""

from clip_pretrain.evaluate.retrieval import (
    EvalError,
    EvalItem,
    EvalSet,
    RetrievalEvalConfig,
    encode_images,
    encode_texts,
    evaluate_retrieval,
    load_karpathy_eval_set,
    load_shard_eval_set,
    recall_at_k,
    slow_recall_at_k,
)
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
