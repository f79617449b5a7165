"""The training run's picture: loss, learning rate and logit scale over steps, from ``log.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path


def read_log(path: Path) -> list[dict]:
    """Rows of log.jsonl; a resumed run appends, so a step seen twice keeps its last row."""
    rows: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["step"]] = row
    return [rows[k] for k in sorted(rows)]


def write_loss_curve(output: Path) -> Path | None:
    """``OUTPUT/loss_curve.png``; None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(output / "log.jsonl")
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, key, title in zip(axes, ("loss", "lr", "logit_scale"), ("contrastive loss", "learning rate", "logit scale (exp)")):
        ax.plot(steps, [r[key] for r in rows], lw=1.4)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{output.name}: {steps[-1]} steps, last loss {rows[-1]['loss']:.3f}, "
                 f"{rows[-1].get('samples_per_s', 0):.0f} samples/s")
    fig.tight_layout()
    path = output / "loss_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
