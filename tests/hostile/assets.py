"""Good inputs the hostile cases start from (tiny shards, rs-tiny weights, a tiny GeoChat...), made once per corpus
run in ``<corpus tmp>/_assets`` (on first use) and copied into each case's workspace, so a case that damages its
copy never touches another case's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


class Assets:
    def __init__(self, root: Path):
        self.root = root

    @classmethod
    def of(cls, ws: Path) -> "Assets":
        """The assets of the corpus run that ``ws`` (a case's workspace) belongs to."""
        return cls(ws.parent / "_assets")

    def path(self, name: str) -> Path:
        path = self.root / name
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            getattr(self, f"_make_{name}")(path)
        return path

    def copy(self, name: str, dest: Path) -> Path:
        """A private copy of asset ``name`` at ``dest``."""
        src = self.path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            shutil.copy2(src, dest)
        return dest

    # ------------------------------------------------------------ builders

    def _make_shards(self, path: Path) -> None:
        """64 decodable samples in 2 shards, sizes.json, as a finished build would leave them."""
        from synthetic.tiny_shards import write_tiny_shards

        write_tiny_shards(path, n=64, shard_size=32)

    def _make_clip(self, path: Path) -> None:
        """rs-tiny weights (random init) as final.safetensors."""
        import torch

        from clip_pretrain.checkpoint import save_safetensors
        from clip_pretrain.models import create_clip

        path.mkdir()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            save_safetensors(create_clip("rs-tiny").model.state_dict(), path / "final.safetensors")

    def _make_torchscript(self, path: Path) -> None:
        """A real TorchScript archive (what OpenAI ships, and what torch.jit.load would run code from)."""
        import torch

        class Tiny(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.proj = torch.nn.Linear(4, 4)

            def forward(self, x):
                return self.proj(x)

        torch.jit.save(torch.jit.script(Tiny()), str(path))

    def _make_geochat(self, path: Path) -> None:
        """A tiny GeoChat (rs-tiny tower at 32 px, 2-layer LLaMA) saved as an HF Llava folder, with 4 images and an
        instruction json of 4 records about them in ``path.parent / 'geochat_data'``."""
        import clip_pretrain  # noqa: F401 - registers rs-tiny
        from tests.hostile import files as f
        from rs_common.formats.conversation import SYSTEM
        from vlm_finetune.export import export_vision_tower
        from vlm_finetune.geochat import assemble_geochat, save_geochat
        from synthetic.tiny_llm import word_vocab, write_tiny_llm

        work = path.parent / "geochat_build"
        records = [{"id": f"r{i}", "image": f"images/{i}.png", "task": "scene",
                    "conversations": [{"from": "human", "value": "<image>\nwhat is this"},
                                      {"from": "gpt", "value": "a green field"}]} for i in range(4)]
        data = path.parent / "geochat_data"
        for i in range(4):
            f.image(data / "images" / f"{i}.png", 48, 48, seed=i)
        (data / "instruct.json").write_text(json.dumps(records))
        tower = export_vision_tower(None, "rs-tiny", 32, work / "tower")
        llm = write_tiny_llm(work / "llm", word_vocab([SYSTEM, "what is this", "a green field"]), hidden=32, layers=1)
        model, processor = assemble_geochat(tower, llm)
        save_geochat(model, processor, path)
        shutil.rmtree(work)

    def geochat_data(self) -> Path:
        self.path("geochat")
        return self.root / "geochat_data"
