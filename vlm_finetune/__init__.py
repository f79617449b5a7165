"""Stage 2: the RS CLIP vision tower in GeoChat (LLaVA-1.5 on transformers' LlavaForConditionalGeneration).

``export`` (open_clip visual -> HF CLIPVisionModel dir, and back), ``interpolate`` (position-embedding resize),
``geochat`` (assembly, tower swap), ``convert`` (original LLaVA/GeoChat layout <-> HF Llava), ``tiny`` (a random
stand-in LLaMA for demos and tests).
"""
