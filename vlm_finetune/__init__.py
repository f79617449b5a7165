"""Stage 2: the RS CLIP vision tower in GeoChat (LLaVA-1.5 on transformers' LlavaForConditionalGeneration).

``export`` (open_clip visual -> HF CLIPVisionModel dir, and back), ``interpolate`` (position-embedding resize and the
image-size policy), ``parts`` (tower, image processor, projector, tokenizer), ``geochat`` (assembly, tower swap, the
``GeoChat`` handle), ``convert`` (original LLaVA/GeoChat layout <-> HF Llava), ``instruct`` / ``data`` / ``train``
(instruction data and LoRA fine-tuning), ``evaluate`` / ``infer`` / ``report`` (answers, scores, pictures). The
LLaVA record and the vicuna_v1 template are :mod:`rs_common.formats`'; weights reading is :mod:`rs_common.weights`.
"""
