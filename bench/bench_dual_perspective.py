"""One LoRA training step of GeoChat: dual-perspective (INF-LLaVA's input path, ``--high-res dual-perspective``) vs
plain, same LLM, same batch, same image tokens.

    python bench/bench_dual_perspective.py [--grid 3] [--batch-size 4] [--steps 5] [--text-tokens 64]   # CPU, tiny
    python bench/bench_dual_perspective.py --preset 7b --batch-size 2 --steps 5 --bf16 --gradient-checkpointing  # GPU

Tiny (default): the rs-tiny tower at 32 px (patch 8, 16 image tokens) + a 64-wide 2-layer LLaMA. ``--preset 7b``: a
Vicuna-7B-shaped LLaMA (4096 wide, 32 layers) and a ViT-L-14-336 tower at 504 px (1296 image tokens), random
weights, as bench/bench_finetune.py builds it.

Each variant runs in its own process (peak memory = CUDA max allocated on a GPU, else ``ru_maxrss``): the model
loaded with ``load_geochat``, made dual-perspective (``apply_high_res``) or not, wrapped by
``vlm_finetune.train.prepare_model`` (LoRA r 64 on the LLM, projector and the dual-perspective module trained, tower
frozen), AdamW; the batch is ``--batch-size`` copies of one synthetic scene through ``image_prep.pixel_values`` (1 or
``2N^2 + 1`` sub-images) with the same prompt of image tokens + ``--text-tokens`` text tokens. One warm-up step, then
``--steps`` timed steps (forward, backward, optimizer step); tokens/s counts every token of the batch (image tokens
included). "saved for backward": the distinct storages autograd keeps for the backward pass of one step (a
device-independent view of activation memory; on CPU the peak RSS is mostly the interpreter and libraries). The tiny
model on CPU shows the pipeline's relative overhead, not 7B on a GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PRESETS = {"7b": {"tower": "ViT-L-14-336", "image_size": 504, "hidden": 4096, "layers": 32, "heads": 32,
                  "intermediate": 11008, "vocab_size": 32000}}
WORDS = ["describe", "the", "image", "many", "planes", "a", "green", "field", "ships", "harbour"]


def make_model(root: Path, image_size: int, hidden: int, layers: int, tower_name: str = "rs-tiny",
               shape: dict | None = None) -> Path:
    import clip_pretrain  # noqa: F401 - registers rs-tiny
    from rs_common.formats.conversation import SYSTEM
    from synthetic.tiny_llm import word_vocab, write_tiny_llm
    from vlm_finetune.export import export_vision_tower
    from vlm_finetune.geochat import assemble_geochat

    tower = export_vision_tower(None, tower_name, image_size, root / "tower")
    llm = write_tiny_llm(root / "llm", word_vocab([SYSTEM, *WORDS]), hidden=hidden, layers=layers, **(shape or {}))
    assemble_geochat(tower, llm).save(root / "geochat")
    return root / "geochat"


def peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_batch(model, processor, batch: int, text_tokens: int, grid: int) -> dict:
    """``batch`` copies of one synthetic scene and one prompt: BOS, the image tokens, ``text_tokens`` text tokens
    (all labelled)."""
    import numpy as np
    import torch
    from PIL import Image

    from vlm_finetune.image_prep import pixel_values

    image = Image.fromarray((np.random.RandomState(0).rand(300, 400, 3) * 255).astype("uint8"))
    pixels = pixel_values(image, processor, "pad", grid)[0]
    tok = processor.tokenizer
    words = tok.convert_tokens_to_ids(WORDS)
    text = [words[i % len(words)] for i in range(text_tokens)]
    ids = [tok.bos_token_id] + [model.config.image_token_index] * model.config.image_seq_length + text
    ids = torch.tensor([ids] * batch)
    labels = ids.clone()
    labels[:, :1 + model.config.image_seq_length] = -100
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
            "pixel_values": pixels.unsqueeze(0).expand(batch, *pixels.shape).contiguous()}


def run_variant(model_dir: str, variant: str, grid: int, batch: int, steps: int, text_tokens: int, bf16: bool,
                grad_ckpt: bool) -> dict:
    import torch

    from vlm_finetune.dual_perspective import apply_high_res
    from vlm_finetune.geochat import load_geochat
    from vlm_finetune.image_prep import model_high_res_grid
    from vlm_finetune.train import FinetuneConfig, prepare_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    chat = load_geochat(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    model = apply_high_res(chat.model, "dual-perspective" if variant == "dual" else "none", grid, seed=0)
    model.config.use_cache = False
    cfg = FinetuneConfig(model=model_dir, data="-", images="-", output="-", train_projector=True,
                         gradient_checkpointing=grad_ckpt)
    if grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    net = prepare_model(model, cfg).to(device).train()
    inputs = {k: v.to(device) for k, v in make_batch(model, chat.processor, batch, text_tokens,
                                                       model_high_res_grid(model)).items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(next(model.model.vision_tower.parameters()).dtype)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5)

    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def step(measure: bool = False) -> float:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16), \
                torch.autograd.graph.saved_tensors_hooks(pack if measure else (lambda t: t), lambda t: t):
            loss = net(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    step(measure=True)  # warm-up (allocations, kernels), counting the tensors autograd saves for backward
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    tokens = int(inputs["attention_mask"].sum())
    return {"variant": variant, "sub_images": int(inputs["pixel_values"].shape[1]) if variant == "dual" else 1,
            "image_tokens": int(model.config.image_seq_length), "batch_tokens": tokens, "step_s": seconds,
            "tokens_per_s": tokens / seconds, "peak_mb": peak_mb(),
            "saved_mb": sum(saved.values()) / 2**20,
            "trainable": sum(p.numel() for p in net.parameters() if p.requires_grad)}


def table(rows: list[dict]) -> str:
    head = ("| variant | sub-images / image | image tokens | batch tokens | step (s) | tokens/s | peak MB | "
            "saved for backward MB | trainable |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['sub_images']} | {r['image_tokens']} | {r['batch_tokens']} | {r['step_s']:.3f} "
              f"| {r['tokens_per_s']:.0f} | {r['peak_mb']:.0f} | {r['saved_mb']:.1f} | {r['trainable']:,} |"
              for r in rows]
    plain, dual = rows
    lines.append(f"\ndual / plain: tokens/s x{dual['tokens_per_s'] / plain['tokens_per_s']:.2f}, peak memory "
                 f"x{dual['peak_mb'] / plain['peak_mb']:.2f}, saved for backward x{dual['saved_mb'] / plain['saved_mb']:.2f}")
    return "\n".join(lines)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", type=int, default=3, help="N of the dual-perspective crops")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    p.add_argument("--text-tokens", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a real model shape instead of the tiny one (GPU)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast and weights (GPU)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--variant", choices=("plain", "dual"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.variant:
        print(json.dumps(run_variant(args.model, args.variant, args.grid, args.batch_size, args.steps,
                                     args.text_tokens, args.bf16, args.gradient_checkpointing)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.preset:
            shape = dict(PRESETS[args.preset])
            tower, size, hidden, layers = (shape.pop(k) for k in ("tower", "image_size", "hidden", "layers"))
            model = make_model(root, size, hidden, layers, tower, shape)
        else:
            model = make_model(root, args.image_size, args.hidden, args.layers)
        rows = []
        for variant in ("plain", "dual"):
            cmd = [sys.executable, __file__, "--variant", variant, "--model", str(model), "--grid", str(args.grid),
                   "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--text-tokens",
                   str(args.text_tokens)] + ["--bf16"] * args.bf16 + \
                ["--gradient-checkpointing"] * args.gradient_checkpointing
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
