"""GeoChat LoRA fine-tuning throughput and peak memory: ours (vlm_finetune.train) vs a plain HF Trainer + peft loop.

    python bench/bench_finetune.py [--steps 40] [--batch-size 8] [--image-size 32] [--hidden 64] [--layers 2]
    python bench/bench_finetune.py --preset 7b --batch-size 2 --steps 20 --bf16 --gradient-checkpointing   # GPU

``--preset 7b``: a Vicuna-7B-shaped LLaMA (4096 wide, 32 layers, 32 heads, 11008, vocab 32000) and a
ViT-L-14-336 tower at 504 px (1296 image tokens), random weights, as GeoChat is shaped.

Both run as subprocesses (peak RSS = ``ru_maxrss`` of that process; CUDA peak when on a GPU) on the same tiny
GeoChat (rs-tiny tower + write_tiny_llm, nothing downloaded), the same samples built from ../shared/data, the same
LoRA (r 64 / alpha 16 / dropout 0.05 on the language model's linears, projector in modules_to_save), batch size,
steps and seed. The baseline is the usual recipe: LlavaProcessor(text=full vicuna prompt, images=raw image), labels
= input_ids with image and pad tokens masked (it also trains on the prompt), no pad-to-square. Tokens/s counts
non-pad tokens (image tokens included) over the Trainer's train_runtime. The tiny model on CPU says nothing about
7B on GPUs; it is a regression check of the pipeline's overhead.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


PRESETS = {"7b": {"tower": "ViT-L-14-336", "image_size": 504, "hidden": 4096, "layers": 32, "heads": 32,
                  "intermediate": 11008, "vocab_size": 32000}}


def make_model(root: Path, image_size: int, hidden: int, layers: int, tower_name: str = "rs-tiny",
               shape: dict | None = None) -> tuple[Path, Path, Path]:

    import clip_pretrain  # noqa: F401 - registers rs-tiny
    from rs_common.paths import shared_data_dir
    from rs_common.formats.conversation import SYSTEM
    from vlm_finetune.export import export_vision_tower
    from vlm_finetune.geochat import assemble_geochat, save_geochat
    from vlm_finetune.instruct import build_instruct
    from synthetic.tiny_llm import word_vocab, write_tiny_llm

    data = shared_data_dir()
    recs = build_instruct([("dota", str(data / "detection/dota")), ("folders", str(data / "scenes/aid"))],
                          seed=0, image_root=data)
    recs = [r for r in recs if r["task"] != "grounding"][:64]
    texts = [SYSTEM] + [t["value"] for r in recs for t in r["conversations"]]
    tower = export_vision_tower(None, tower_name, image_size, root / "tower")
    llm = write_tiny_llm(root / "llm", word_vocab(texts), hidden=hidden, layers=layers, **(shape or {}))
    model, processor = assemble_geochat(tower, llm)  # write_tiny_llm already sharpens the random lm_head
    save_geochat(model, processor, root / "geochat")
    (root / "train.json").write_text(json.dumps(recs))
    return root / "geochat", root / "train.json", data


def peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(model: str, data: str, images: str, out: str, steps: int, batch: int, bf16: bool = False,
             grad_ckpt: bool = False) -> dict:
    from vlm_finetune.train import FinetuneConfig, train

    cfg = FinetuneConfig(model=model, data=data, images=images, output=out, max_steps=steps, batch_size=batch,
                         num_workers=0, logging_steps=steps, save_steps=10**9, merge=False, max_length=2048,
                         bf16="true" if bf16 else "false", gradient_checkpointing=grad_ckpt,
                         train_projector=True)  # as the baseline it is measured against (LoRA + projector)
    summary = train(cfg)
    from vlm_finetune.data import GeoChatDataset
    from vlm_finetune.geochat import load_geochat

    _, processor = load_geochat(model)
    ds = GeoChatDataset(data, images, processor, max_length=2048)
    per_epoch = sum(len(ids) for _, ids, _ in ds.items)
    return {"tokens": per_epoch * steps * batch / len(ds), "summary": summary}


def run_baseline(model: str, data: str, images: str, out: str, steps: int, batch: int, bf16: bool = False,
                 grad_ckpt: bool = False) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from PIL import Image
    from transformers import Trainer, TrainingArguments

    from rs_common.formats.conversation import build_prompt
    from vlm_finetune.geochat import load_geochat
    from vlm_finetune.train import lora_target_regex

    net, processor = load_geochat(model)
    recs = json.loads(Path(data).read_text())
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(recs)

        def __getitem__(self, i):
            r = recs[i]
            with Image.open(Path(images) / r["image"]) as im:
                image = im.convert("RGB")
            enc = processor(text=tok.bos_token + build_prompt(r["conversations"]), images=image, return_tensors="pt")
            ids = enc["input_ids"][0]
            labels = ids.clone()
            labels[ids == image_id] = -100
            return {"input_ids": ids, "labels": labels, "pixel_values": enc["pixel_values"][0]}

    def collate(batch):
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), tok.pad_token_id)
        labels = torch.full((len(batch), n), -100)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k], labels[i, :k], mask[i, :k] = b["input_ids"], b["labels"], 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask,
                "pixel_values": torch.stack([b["pixel_values"] for b in batch])}

    net.requires_grad_(False)
    net = get_peft_model(net, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.05, target_modules=lora_target_regex(net),
                                         modules_to_save=["multi_modal_projector"]))
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=2e-4,
                             logging_steps=steps, save_strategy="no", report_to=[], remove_unused_columns=False,
                             dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                             warmup_steps=0.03, lr_scheduler_type="cosine", seed=0, bf16=bf16,
                             gradient_checkpointing=grad_ckpt)
    ds = DS()
    trainer = Trainer(model=net, args=args, train_dataset=ds, data_collator=collate)
    result = trainer.train()
    per_epoch = sum(len(ds[i]["input_ids"]) for i in range(len(ds)))
    return {"tokens": per_epoch * steps * batch / len(ds),
            "summary": {"train_runtime": result.metrics["train_runtime"], "train_loss": result.training_loss}}


def child(args) -> None:
    fn = run_ours if args.variant == "ours" else run_baseline
    res = fn(args.model, args.data, args.images, args.out, args.steps, args.batch_size, args.bf16, args.gradient_checkpointing)
    s = res["summary"]
    print(json.dumps({"variant": args.variant, "tokens": res["tokens"], "runtime_s": s["train_runtime"], "peak_mb": peak_mb(),
                      "train_loss": s.get("train_loss")}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a real model shape instead of the tiny one (GPU)")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--variant", choices=("ours", "baseline"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--images", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variant:
        child(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.preset:
            shape = dict(PRESETS[args.preset])
            tower, size, hidden, layers = shape.pop("tower"), shape.pop("image_size"), shape.pop("hidden"), shape.pop("layers")
            model, data, images = make_model(root, size, hidden, layers, tower, shape)
        else:
            model, data, images = make_model(root, args.image_size, args.hidden, args.layers)
        rows = []
        for variant in ("baseline", "ours"):
            cmd = [sys.executable, __file__, "--variant", variant, "--model", str(model), "--data", str(data),
                   "--images", str(images), "--out", str(root / variant), "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size)] + ["--bf16"] * args.bf16 + ["--gradient-checkpointing"] * args.gradient_checkpointing
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["tokens_per_s"] = row["tokens"] / row["runtime_s"] if row["runtime_s"] else None
            rows.append(row)
            print(json.dumps(row))
    base, ours = rows
    print(json.dumps({"tokens_per_s_ratio_ours_over_baseline": ours["tokens_per_s"] / base["tokens_per_s"],
                      "peak_mb_ours": ours["peak_mb"], "peak_mb_baseline": base["peak_mb"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
