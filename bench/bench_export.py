"""Forward throughput of an exported vision tower: transformers (SDPA) vs the same weights in open_clip.

    python bench/bench_export.py [--model ViT-B-32] [--image-size 0] [--batch-size 4] [--iters 3] [--warmup 1] \
        [--device cpu] [--dtype fp32] [--checkpoint CKPT] [--json out.json]

The tower of ``--model`` (random init, or ``--checkpoint``) is exported with ``export_vision_tower`` at
``--image-size`` (0: 504 when the patch size divides it, as GeoChat runs ViT-L/14; otherwise the multiple of
the patch size nearest 504, e.g. 512 for ViT-B-32/B-16) to a temporary folder, then:

* transformers: ``CLIPVisionModelWithProjection.from_pretrained(folder, attn_implementation="sdpa")``;
* open_clip: ``open_clip.create_model(model, force_image_size=size)`` with the exported (interpolated)
  weights loaded back through ``load_hf_vision_into_open_clip``: the same weights, open_clip's own modules.

Both run ``--iters`` timed forwards (after ``--warmup``) of the same random batch in ``torch.inference_mode``,
with ``output_hidden_states=True`` on the transformers side as GeoChat/LLaVA call it; wall-clock per batch
(median), images/s and the ratio are printed, and the outputs are compared (image embeddings, and
``hidden_states[-2]`` against open_clip's second-to-last block): a max abs difference above ``--tol`` (fp32
default 1e-3; scaled for half precision) fails with exit 1. The GeoChat setting on a GPU:
``--model ViT-L-14-336 --device cuda --batch-size 32 --dtype bf16``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import open_clip  # noqa: E402
import torch  # noqa: E402

import clip_pretrain  # noqa: E402,F401 - registers rs-tiny
from vlm_finetune.export import export_vision_tower, load_hf_vision_into_open_clip  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_size(patch: int, target: int = 504) -> int:
    lower = (target // patch) * patch
    return min((lower, lower + patch), key=lambda s: (abs(s - target), -s)) if lower else patch


def timed(fn, iters: int, warmup: int, device: torch.device) -> tuple[list[float], object]:
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times, out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--checkpoint", default=None, help="stage-1 checkpoint (default: random init)")
    p.add_argument("--image-size", type=int, default=0, help="0: 504, or the multiple of the patch size nearest it")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--tol", type=float, default=0.0, help="max abs diff allowed (0: 1e-3 fp32, 0.1 half)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    dtype = DTYPES[a.dtype]
    patch = open_clip.get_model_config(a.model)["vision_cfg"]["patch_size"]
    size = a.image_size or default_size(patch)
    tol = a.tol or (1e-3 if dtype == torch.float32 else 0.1)

    from transformers import CLIPVisionModelWithProjection

    with tempfile.TemporaryDirectory() as tmp:
        folder = export_vision_tower(a.checkpoint, a.model, size, Path(tmp) / "tower")
        hf = CLIPVisionModelWithProjection.from_pretrained(folder, attn_implementation="sdpa", dtype=dtype)
        oc = open_clip.create_model(a.model, force_image_size=size,
                                    force_quick_gelu=hf.config.hidden_act == "quick_gelu")
        load_hf_vision_into_open_clip(oc, folder)
    hf = hf.to(device).eval()
    visual = oc.visual.to(device=device, dtype=dtype).eval()

    x = torch.randn(a.batch_size, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    grabbed = {}
    hook = visual.transformer.resblocks[-2].register_forward_hook(lambda m, i, o: grabbed.__setitem__("x", o))
    with torch.inference_mode():
        t_hf, out_hf = timed(lambda: hf(pixel_values=x, output_hidden_states=True), a.iters, a.warmup, device)
        t_oc, out_oc = timed(lambda: visual(x), a.iters, a.warmup, device)
    hook.remove()
    feat_oc = grabbed["x"] if visual.transformer.batch_first else grabbed["x"].transpose(0, 1)
    emb_diff = (out_hf.image_embeds.float() - out_oc.float()).abs().max().item()
    feat_diff = (out_hf.hidden_states[-2].float() - feat_oc.float()).abs().max().item()
    cos = torch.nn.functional.cosine_similarity(out_hf.image_embeds.float(), out_oc.float()).min().item()

    med_hf, med_oc = statistics.median(t_hf), statistics.median(t_oc)
    result = {
        "model": a.model, "image_size": size, "positions": (size // patch) ** 2 + 1, "batch_size": a.batch_size,
        "iters": a.iters, "device": str(device), "dtype": a.dtype,
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(),
        "transformers_sdpa_s": round(med_hf, 4), "open_clip_s": round(med_oc, 4),
        "transformers_img_per_s": round(a.batch_size / med_hf, 2),
        "open_clip_img_per_s": round(a.batch_size / med_oc, 2),
        "ratio_open_clip_over_transformers": round(med_oc / med_hf, 3),
        "max_abs_diff_image_embeds": emb_diff, "max_abs_diff_hidden_states_-2": feat_diff, "min_cosine": cos,
        "agree": emb_diff <= tol and feat_diff <= tol * 10,
    }
    print(f"{a.model} @ {size}px ({result['positions']} positions), batch {a.batch_size}, {a.dtype} on "
          f"{result['device_name']} ({result['threads']} threads), median of {a.iters}:")
    print(f"  transformers (sdpa): {med_hf:.4f} s/batch  {result['transformers_img_per_s']:.2f} img/s")
    print(f"  open_clip          : {med_oc:.4f} s/batch  {result['open_clip_img_per_s']:.2f} img/s")
    print(f"  time ratio open_clip / transformers: {result['ratio_open_clip_over_transformers']:.3f}")
    print(f"  outputs: max |diff| image_embeds {emb_diff:.2e}, hidden_states[-2] {feat_diff:.2e}, min cosine {cos:.6f}"
          f" -> {'agree' if result['agree'] else 'DISAGREE'}")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["agree"] else 1)
