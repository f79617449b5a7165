"""Demo and test data: never needed on real data, and no stage package imports it.

The one generator of everything synthetic in this project, split by job:

- ``demo_data``: the demo data set (``generate_demo``, ``python -m synthetic OUT``): aerial scenes in the real RS
  formats with planted duplicates and contamination, built from ``drawing`` (primitives, textures, the image
  encoder), ``painters`` (objects), ``scenes`` (recipes), ``landcover`` (LoveDA masks), ``captions`` (caption
  grammar), ``formats`` (DOTA / COCO / masks / Karpathy / scene-folder writers) and ``faults`` (planted faults);
- ``tiny_shards``: tiny stage-0-format shards written directly, for fast stage-1 tests and the GPU bench;
- ``tiny_llm``: a tiny random LLaMA with a word-level tokenizer, the stand-in for Vicuna-7B.
"""
