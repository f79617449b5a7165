"""The main job on its embedded default: synthetic RS scenes -> shards -> tiny CLIP training -> evaluation.

    ./run demo                  # or: python launch/demo.py [--out runs/demo] [--steps 300]

No data or weights are needed. Stage 0 generates demo data in the real formats (DOTA labelTxt, COCO json,
LoveDA-style masks, Karpathy caption json, scene folders), reads it with the same readers as real data and
writes de-duplicated shards + report; the caption set's test split is held out (and guarded by
--dedup-against). Stage 1 trains the tiny ``rs-tiny`` CLIP on CPU, then evaluates text<->image retrieval on
that held-out split and zero-shot classification on the scene folders, beside a random-init baseline, and runs
the evaluation suite (zero-shot, linear probe, k-NN, few-shot, retrieval, counting) on the demo data.
Stage 2 exports the trained tower as a Hugging Face CLIPVisionModel at 504 px and assembles GeoChat
(LlavaForConditionalGeneration) around it with a tiny random LLaMA standing in for Vicuna-7B.
"""

import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rs_common.config import make_config, plain_int, setup_logging  # noqa: E402
from shards.build import BuildPlan  # noqa: E402
from shards.build_config import BuildConfig  # noqa: E402
from shards.cli import BuildCommand, run_build_command, source_names  # noqa: E402
from synthetic.demo_data import generate_demo  # noqa: E402


def stage_shards(out: Path, workers: int, seed: int) -> int:
    data = out / "data"
    if not (data / "planted.json").exists():
        print(f"[demo] generating synthetic RS scenes into {data}")
        generate_demo(data, seed=seed)
    shards = out / "shards"
    print(f"[demo] stage 0: building shards into {shards}")
    inputs = [("dota", data / "dota"), ("coco", data / "coco"), ("mask", data / "masks"),
              ("captions", data / "captions"), ("folders", data / "scenes")]
    plan = BuildPlan(inputs=source_names(inputs), output=shards,
                     cfg=make_config(BuildConfig, {"workers": workers, "writer.shard_size": 100}),
                     dedup_against=[data / "captions" / "dataset.json"])
    return run_build_command(BuildCommand(plan, stage="all", overwrite=True))  # prints the counts, as the CLI does


def stage_sensors(out: Path) -> dict:
    """SAR-like and infrared sources (YOLO layout, float32 speckle / uint16; synthetic/sensors.py) through stage 0
    with ``--input.sensor sar infrared``: dB + percentile scaling for SAR, the sensor in every sample and per source."""
    from synthetic.sensors import write_ir_yolo, write_sar_yolo

    data, shards = out / "data", out / "shards_sensors"
    sar, ir = data / "sar_ships", data / "ir_vehicles"
    if not (sar / "classes.txt").exists():
        write_sar_yolo(sar)
        write_ir_yolo(ir)
    print(f"[demo] stage 0 for SAR and infrared: {sar.name} + {ir.name} into {shards}")
    cfg = make_config(BuildConfig, {"workers": 1, "input.sensor": ["sar", "infrared"],
                                    "b2c.sensor_templates": {"sar": "a SAR image with {caption}",
                                                             "infrared": "an infrared image with {caption}"}})
    plan = BuildPlan(inputs=source_names([("yolo", sar), ("yolo", ir)]), output=shards, cfg=cfg)
    if run_build_command(BuildCommand(plan, stage="all", overwrite=True)):
        raise SystemExit("[demo] the SAR/infrared shard build failed")
    report = json.loads((shards / "report.json").read_text())
    return {name: {k: s[k] for k in ("sensor", "read", "written")} for name, s in report["sources"].items()}


DEMO_RUN_MARKER = ".rs-demo-run"


def fresh_run_folder(run: Path) -> None:
    """The demo trains from scratch every time: its own earlier run folder (marked, or holding an earlier demo's
    ``demo_result.json``) is removed first; a folder the demo did not write is refused, never deleted (the trainer
    itself refuses to start afresh over another run's checkpoints)."""
    if run.exists() and any(run.iterdir()):
        if not ((run / DEMO_RUN_MARKER).exists() or (run / "demo_result.json").exists()):
            raise SystemExit(f"[demo] {run} holds files an earlier demo did not write; remove it or pass another --out")
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    (run / DEMO_RUN_MARKER).write_text("a run written by launch/demo.py; the next demo replaces it\n")


# the demo's training settings, as recipe files (the runs record them as recipe.yaml); data and output paths are
# the demo's overrides
DEMO_RECIPES = Path(__file__).resolve().parent.parent / "configs" / "demo"


def stage_train(out: Path, workers: int, steps: int, seed: int) -> dict:
    import clip_pretrain  # noqa: F401 - registers rs-tiny
    from clip_pretrain.config import TrainConfig
    from clip_pretrain.evaluate.retrieval import RetrievalEvalConfig, evaluate_retrieval
    from clip_pretrain.evaluate.zeroshot import ZeroShotConfig, evaluate_zeroshot
    from clip_pretrain.train import train
    from rs_common.config import load_config

    data, run, recipe = out / "data", out / "clip", DEMO_RECIPES / "clip-tiny.yaml"
    cfg = load_config(TrainConfig, recipe, {  # rs-tiny, batch 32, lr 1e-3, wd 0.1, ... from the recipe
        "train_data": str(out / "shards"), "warmup": max(1, steps // 10), "max_steps": steps, "workers": workers,
        "seed": seed, "output": str(run), "save_every_steps": max(1, steps // 3),
        "eval.captions": str(data / "captions" / "dataset.json"),
    })
    print(f"[demo] stage 1: training rs-tiny for {steps} steps on CPU into {run} (recipe {recipe})")
    fresh_run_folder(run)
    summary = train(cfg, recipe=recipe)
    print("[demo] baseline: the same evaluation with random-init weights")
    baseline = evaluate_retrieval(RetrievalEvalConfig(
        model="rs-tiny", checkpoint=None, captions=str(data / "captions" / "dataset.json"), split="test",
        output=str(run / "eval_random_init"), device="cpu", workers=0, report_queries=0))
    zeroshot = {}
    for name, ckpt in (("trained", summary.get("final")), ("random_init", None)):
        zeroshot[name] = evaluate_zeroshot(ZeroShotConfig(
            model="rs-tiny", checkpoint=ckpt, data=str(data / "scenes"), output=str(run / f"zeroshot_{name}"),
            device="cpu", workers=0))
    suite = stage_suite(out, summary.get("final"))
    keys = ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5", "mean_recall")
    result = {
        "steps": summary["step"], "train_seconds": summary["seconds"], "samples_per_s": summary["samples_per_s"],
        "retrieval_heldout": {k: summary["eval"][k] for k in keys} | {"n_images": summary["eval"]["n_images"]},
        "retrieval_random_init": {k: baseline[k] for k in keys},
        "zeroshot_top1": {k: v["top1"] for k, v in zeroshot.items()},
        "suite": suite,
    }
    (run / "demo_result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def stage_suite(out: Path, checkpoint: str | None) -> dict:
    """RemoteCLIP's evaluation suite (every task: zero-shot, linear probe, k-NN, few-shot, retrieval, counting) on the
    demo data, for the trained model and a random init; the shipped ``demo`` suite, paths relative to the demo data."""
    from clip_pretrain.evaluate.suite import SuiteConfig, run_suite, suite_headline

    print("[demo] evaluation suite (launch/eval_suite.py --suite demo) on the trained model and a random init")
    runs = (("trained", checkpoint or ""), ("random_init", "random"))
    return {name: suite_headline(run_suite(SuiteConfig(
        checkpoint=ckpt, model="rs-tiny", suite="demo", data_root=str(out / "data"),
        output=str(out / "clip" / f"suite_{name}"), device="cpu", workers=0))) for name, ckpt in runs}


def build_demo_instruct(out: Path) -> list[dict]:
    """GeoChat instruction records (LLaVA json) from the demo's DOTA scenes and scene folders."""
    from vlm_finetune.instruct import InstructConfig, run_build_instruct

    data, instruct = out / "data", out / "geochat" / "instruct.json"
    instruct.parent.mkdir(parents=True, exist_ok=True)
    summary = run_build_instruct(make_config(
        InstructConfig, input=[f"dota:{data / 'dota'}", f"folders:{data / 'scenes'}"], output=str(instruct),
        image_root=str(data), tasks=["refer", "identify", "count", "presence", "scene"], seed=0))
    print(json.dumps(summary))
    return json.loads(instruct.read_text())


def stage_geochat(out: Path, image_size: int = 504) -> dict:
    """Stage 2a on the demo checkpoint: export the tower at 504 px, assemble GeoChat on HF Llava with a tiny
    random LLaMA standing in for Vicuna-7B, and run one training forward + a short generation."""
    import torch
    from PIL import Image

    from rs_common.formats.conversation import IMAGE_TOKEN, build_prompt, generation_prompt
    from vlm_finetune.export import export_vision_tower
    from vlm_finetune.geochat import assemble_geochat, save_geochat
    from vlm_finetune.image_prep import prepare_image
    from synthetic.tiny_llm import word_vocab, write_tiny_llm

    data, root = out / "data", out / "geochat"
    print(f"[demo] stage 2: exporting the trained rs-tiny tower at {image_size} px, assembling GeoChat into {root}")
    tower = export_vision_tower(out / "clip" / "final.safetensors", "rs-tiny", image_size, root / f"vision_tower_{image_size}")
    entries = json.loads((data / "captions" / "dataset.json").read_text())["images"]
    instruct = build_demo_instruct(out)  # its words go into the stand-in LLM's vocabulary too
    texts = [s["raw"] for e in entries for s in e["sentences"]] + [t["value"] for r in instruct for t in r["conversations"]]
    llm = write_tiny_llm(root / "tiny_llm", word_vocab(texts))
    model, processor = assemble_geochat(tower, llm)
    test = next(e for e in entries if e["split"] == "test")
    image = prepare_image(Image.open(data / "captions" / "images" / test["filename"]), processor)  # as training does
    prompt = build_prompt([f"{IMAGE_TOKEN}\nDescribe the image", test["sentences"][0]["raw"]])
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    labels = inputs["input_ids"].clone()
    labels[labels == model.config.image_token_index] = -100
    with torch.no_grad():
        loss = model(**inputs, labels=labels).loss.item()
        ask = processor(images=image, text=generation_prompt("Describe the image"), return_tensors="pt")
        new = model.generate(**ask, max_new_tokens=6, do_sample=False)[0, ask["input_ids"].shape[1]:]
    save_geochat(model, processor, root / "model")
    n_tokens = int((inputs["input_ids"] == model.config.image_token_index).sum())
    return {"vision_tower": str(tower), "model": str(root / "model"), "image_tokens": n_tokens,
            "loss_untrained_llm": round(loss, 3), "generated (random LLM)": processor.decode(new, skip_special_tokens=True)}


def stage_finetune(out: Path, steps: int = 40) -> dict:
    """Stage 2b on the demo: instruction data from the demo's DOTA + scene folders (held-out 20 %), LoRA
    fine-tuning of the stage-2a GeoChat, then refer (acc@0.5) and scene classification (accuracy) on the held-out
    records. The LLM is the tiny random stand-in, so the scores show the plumbing, not GeoChat's quality."""
    from rs_common.config import load_config
    from vlm_finetune.evaluate import EvalGeoChatConfig, evaluate_geochat
    from vlm_finetune.train import FinetuneConfig, train as finetune

    data, root = out / "data", out / "geochat"
    print(f"[demo] stage 2b: instruction data -> LoRA fine-tuning ({steps} steps) -> GeoChat evaluation")
    records = json.loads((root / "instruct.json").read_text())
    train = [r for i, r in enumerate(records) if i % 5]
    held = [r for i, r in enumerate(records) if not i % 5]
    (root / "instruct_train.json").write_text(json.dumps(train))
    recipe = DEMO_RECIPES / "geochat-tiny.yaml"  # batch 2, lr 1e-3, max length 4400, ...
    summary = finetune(load_config(FinetuneConfig, recipe, {
        "model": str(root / "model"), "data": str(root / "instruct_train.json"), "images": str(data),
        "output": str(root / "finetuned"), "max_steps": steps, "save_steps": steps}), recipe=recipe)
    print(f"[demo] fine-tuned {summary['steps']} steps: adapter {summary.get('adapter')}, merged {summary.get('merged')}")
    scores = {}
    for task, name in (("refer", "refer"), ("classify", "scene")):
        subset = [r for r in held if r.get("task") == name][:10]
        (root / f"heldout_{name}.json").write_text(json.dumps(subset))
        metrics = evaluate_geochat(make_config(
            EvalGeoChatConfig, model=str(root / "finetuned" / "merged"), task=task, data=str(root / f"heldout_{name}.json"),
            images=str(data), output=str(root / f"eval_{task}"), max_new_tokens=24))
        scores[task] = metrics["score"]
        print(f"[demo] held-out {task}: score {metrics['score']} ({metrics['output']})")
    bench = stage_bench(out)
    return {"instruct_records": len(records), "instruct_report": str(root / "instruct_report.html"), "train": len(train),
            "held_out": len(held), "steps": summary["steps"], "loss_first_last": [summary["losses"][0], summary["losses"][-1]],
            "train_seconds": summary["train_runtime"], "adapter": summary.get("adapter"), "merged": summary.get("merged"),
            "held_out_scores (random stand-in LLM)": scores, "geochat_bench (random stand-in LLM)": bench}


def stage_bench(out: Path, n_per_file: int = 4) -> dict:
    """GeoChat-Bench on the demo: bench files in GeoChat's released formats written from the demo data
    (synthetic/geochat_bench.py), answered by the fine-tuned stand-in GeoChat and scored as
    ``launch/eval_geochat.py --bench`` scores them."""
    from synthetic.geochat_bench import run_demo_bench

    root = out / "geochat"
    print(f"[demo] GeoChat-Bench: {n_per_file} records per bench file, answered by the fine-tuned stand-in")
    result = run_demo_bench(out / "data", root / "bench", model=str(root / "finetuned" / "merged"), n_per_file=n_per_file)
    headline = {"accuracy", "average", "acc@0.5", "rouge1", "rougeL", "meteor"}
    return {stem: {k: v for k, v in m.items() if k in headline} for stem, m in result["metrics"].items()}


def stage_high_res(out: Path, steps: int = 4, tile: int = 512, overlap: int = 128) -> dict:
    """Stage 0 + 2 at high resolution: a 2048 px DOTA scene (larger than a tile, objects across tile borders) -> tiled
    shards (``--tile.size``) and DOTA_devkit-style tiles (``split_dota``) -> instruction records from the tiles -> a
    short LoRA fine-tune of the stage-2a GeoChat with INF-LLaVA's dual-perspective input (grid 2)."""
    from shards.split_dota import SplitDotaConfig, split_dota
    from synthetic.large_scene import write_dota_scene
    from vlm_finetune.instruct import InstructConfig, run_build_instruct
    from vlm_finetune.train import FinetuneConfig, train as finetune

    data, root = out / "data", out / "geochat"
    scene, tiles, shards = data / "dota_large", data / "dota_large_tiles", out / "shards_tiled"
    print(f"[demo] high resolution: a 2048 px DOTA scene -> {tile} px tiles -> dual-perspective GeoChat ({steps} steps)")
    if not (scene / "labelTxt").is_dir():
        write_dota_scene(scene, side=2048, tile=tile, overlap=overlap, seed=0)
    tiling = {"tile.size": tile, "tile.overlap": overlap}
    plan = BuildPlan(inputs=source_names([("dota", scene)]), output=shards,
                     cfg=make_config(BuildConfig, {"workers": 1, **tiling}))
    if run_build_command(BuildCommand(plan, stage="all", overwrite=True)):
        raise SystemExit("[demo] the tiled shard build failed")
    report = json.loads((shards / "report.json").read_text())
    split = split_dota(make_config(SplitDotaConfig, {"input": str(scene), "output": str(tiles), **tiling}))
    records = run_build_instruct(make_config(
        InstructConfig, input=[f"dota:{tiles}"], output=str(root / "instruct_tiles.json"), image_root=str(data),
        tasks=["refer", "count", "presence"], seed=0))
    summary = finetune(make_config(
        FinetuneConfig, model=str(root / "model"), data=str(root / "instruct_tiles.json"), images=str(data),
        output=str(root / "finetuned_dual"), max_steps=steps, batch_size=1, learning_rate=1e-3, num_workers=0,
        logging_steps=1, save_steps=steps, max_length=4400, train_projector=True, high_res="dual-perspective",
        high_res_grid=2))
    return {"tiled_shards": {k: report[k] for k in ("read", "written", "skipped") if k in report} | {"scenes": report.get("scenes")},
            "split_dota": {"tiles": split["tiles"], "objects": split["objects"]}, "instruct_records": records["records"],
            "dual_perspective_finetune": {"steps": summary["steps"], "loss_first_last": [summary["losses"][0], summary["losses"][-1]],
                                          "train_seconds": summary["train_runtime"], "merged": summary.get("merged")}}


@contextlib.contextmanager
def timed(seconds: dict[str, float], stage: str):
    """Record how long ``stage`` took (the demo prints it per stage; the README quotes it)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = round(time.perf_counter() - start, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="where demo data and outputs go")
    parser.add_argument("--workers", type=plain_int, default=2, help="worker processes (shard build and data loader)")
    parser.add_argument("--seed", type=plain_int, default=0, help="seed of the synthetic scenes and of training")
    parser.add_argument("--steps", type=plain_int, default=300, help="training steps of the tiny model")
    parser.add_argument("--stage", choices=("all", "shards", "train", "geochat"), default="all",
                        help="shards: stage 0 only; train: stage 1 on existing demo shards; geochat: stage 2 on the trained demo model")
    args = parser.parse_args(argv)
    setup_logging()
    seconds: dict[str, float] = {}
    result = {}
    if args.stage in ("all", "shards"):
        with timed(seconds, "0 shards"):
            rc = stage_shards(args.out, args.workers, args.seed)
            result["sensors"] = stage_sensors(args.out) if not rc else {}
        if rc or args.stage == "shards":
            print(f"[demo] shard report: {args.out / 'shards' / 'report.html'}")
            return rc
    if args.stage in ("all", "train"):
        with timed(seconds, "1 train + eval"):
            result = stage_train(args.out, args.workers, args.steps, args.seed) | result
    if args.stage in ("all", "geochat"):
        with timed(seconds, "2a GeoChat"):
            result["geochat"] = stage_geochat(args.out)
        with timed(seconds, "2b LoRA + eval"):
            result["geochat_finetune"] = stage_finetune(args.out)
        with timed(seconds, "2c high-res"):
            result["high_res"] = stage_high_res(args.out)
    result["seconds_per_stage"] = seconds
    run = args.out / "clip"
    print(json.dumps(result, indent=2))
    print(f"[demo] shard report:      {args.out / 'shards' / 'report.html'}")
    print(f"[demo] loss curve:        {run / 'loss_curve.png'}")
    print(f"[demo] retrieval report:  {run / 'eval' / 'report.html'}")
    print(f"[demo] zero-shot:         {run / 'zeroshot_trained' / 'confusion_matrix.png'}")
    print(f"[demo] evaluation suite:  {run / 'suite_trained' / 'suite.html'}")
    print(f"[demo] GeoChat (HF Llava): {args.out / 'geochat' / 'model'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
