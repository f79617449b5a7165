"""Stage 1: contrastive (continual) pretraining of open_clip models on stage-0 shards, and zero-shot evaluation.

Importing the package registers the shipped model configs (``rs-tiny``) with open_clip, so
``open_clip.create_model("rs-tiny")`` works anywhere after ``import clip_pretrain``.
"""

from clip_pretrain.models import register_model_configs

register_model_configs()
