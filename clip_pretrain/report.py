"""The training run's picture: loss, learning rate and logit scale over steps, from ``log.jsonl``, and the
evaluations during training (``"kind": "eval"`` rows: validation loss on the loss panel, recall / zero-shot
accuracy in a panel of their own)."""

from __future__ import annotations

import json
from pathlib import Path

# eval-row keys drawn in the evaluation panel (percentages), with their legend labels
EVAL_CURVES = {"val_mean_recall": "val mean recall", "val_i2t_R@1": "val i2t R@1", "val_t2i_R@1": "val t2i R@1",
               "zeroshot_top1": "zero-shot top-1", "zeroshot_top5": "zero-shot top-5"}


def read_log(path: Path, kind: str = "train") -> list[dict]:
    """Rows of log.jsonl of one kind: ``train`` (a step's row; rows without a kind) or ``eval``. A resumed run
    appends, so a step seen twice keeps its last row."""
    rows: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("kind", "train") == kind:
                    rows[row["step"]] = row
    return [rows[k] for k in sorted(rows)]


def write_loss_curve(output: Path) -> Path | None:
    """``OUTPUT/loss_curve.png``; None when nothing was logged. With evaluation rows, the validation loss is drawn
    over the training loss and a fourth panel shows the recall / zero-shot metrics over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(output / "log.jsonl")
    if not rows:
        return None
    evals = read_log(output / "log.jsonl", kind="eval")
    steps = [r["step"] for r in rows]
    panels = 4 if evals else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.3 * panels + 0.1, 3.4))
    for ax, key, title in zip(axes, ("loss", "lr", "logit_scale"), ("contrastive loss", "learning rate", "logit scale (exp)")):
        ax.plot(steps, [r[key] for r in rows], lw=1.4, label="train")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if evals:
        draw_evals(axes[0], axes[3], evals)
    fig.suptitle(f"{output.name}: {steps[-1]} steps, last loss {rows[-1]['loss']:.3f}, "
                 f"{rows[-1].get('samples_per_s', 0):.0f} samples/s")
    fig.tight_layout()
    path = output / "loss_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_evals(loss_ax, metric_ax, evals: list[dict]) -> None:
    """The evaluation rows: ``val_loss`` as markers on the loss panel, the percentages on ``metric_ax``."""
    with_loss = [r for r in evals if "val_loss" in r]
    if with_loss:
        loss_ax.plot([r["step"] for r in with_loss], [r["val_loss"] for r in with_loss], "o-", ms=4, lw=1.2,
                     label="validation")
        loss_ax.legend(fontsize=8)
    for key, label in EVAL_CURVES.items():
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            metric_ax.plot(*zip(*points), "o-", ms=4, lw=1.2, label=label)
    metric_ax.set_title("evaluation during training (%)")
    metric_ax.set_xlabel("step")
    metric_ax.grid(alpha=0.3)
    if metric_ax.lines:
        metric_ax.legend(fontsize=7)
