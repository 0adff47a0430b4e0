"""Train the grokking model of Nanda et al. (2023) and ship it as `utils/assets/grokking_p113/`.

Paper config: p = 113, 30 % of the pairs for training, full-batch AdamW (lr 1e-3, weight decay 1.0,
betas (0.9, 0.98)), 16 000 epochs. Uses the fast exact model of `micourse.grokking` and the loop of
scripts/grokking_training.py (~0.05-0.1 s per epoch on one CPU core, so ~15-45 minutes).

Writes, as it goes:
- checkpoints/epoch_XXXXX.pt: float16 checkpoints (`micourse.models.save_native` format) every 100 epochs
  up to 1000, then every 400 (load one with `load_model("grokking_p113", checkpoint=...)`, all of them
  with `micourse.models.load_checkpoint_series("grokking_p113")`);
- metrics.json: train/test loss and accuracy and the sum of squared weights every `--log-every` epochs;
and at the end model.pt (the final model in float32), model.json and checksums.sha256.
Re-running it replaces the shipped files of that folder.

Usage: python scripts/train_grokking.py [--seed 0] [--epochs 16000]
Set MICOURSE_THREADS to choose the number of CPU threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch

from micourse import grokking
from micourse.models import ASSETS, save_native, write_checksums

try:  # from the repository root (tests, bench)
    from scripts import grokking_training as training
except ImportError:  # run as `python scripts/<this file>.py`
    import grokking_training as training


def checkpoint_epochs(epochs: int) -> list[int]:
    """Dense early (memorisation happens in the first ~1000 epochs), then every 400, and the last epoch."""
    return sorted(set(range(0, min(epochs, 1000), 100)) | set(range(1000, epochs + 1, 400)) | {epochs})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--frac-train", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=16000)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="default utils/assets/grokking_p<p>")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("MICOURSE_THREADS", "1")))

    out = args.out or ASSETS / f"grokking_p{args.p}"
    if (out / "checkpoints").exists():
        shutil.rmtree(out / "checkpoints")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    for stale in ("model.json", "model.pt", "checksums.sha256", "metrics.json"):
        (out / stale).unlink(missing_ok=True)

    data = training.Data.make(args.p, args.frac_train, args.split_seed)
    model = grokking.FastModAddModel(args.p, seed=args.seed)
    to_save = set(checkpoint_epochs(args.epochs))
    config = {"p": args.p, "frac_train": args.frac_train, "seed": args.seed, "split_seed": args.split_seed,
              "epochs": args.epochs, "lr": grokking.LR, "weight_decay": grokking.WEIGHT_DECAY,
              "betas": list(grokking.BETAS), "warmup_steps": grokking.WARMUP_STEPS,
              "threads": torch.get_num_threads()}
    history = []

    def save(epoch, model, row):
        history.append(row)
        if epoch in to_save:
            save_native(model.to_bridge(), out / "checkpoints", f"epoch_{epoch:05d}.pt", dtype=torch.float16)
            (out / "metrics.json").write_text(json.dumps(
                {"config": config, "checkpoint_epochs": sorted(e for e in to_save if e <= epoch),
                 "log": history}, indent=1))

    training.train(model, data, args.epochs, log_every=args.log_every, callback=save)
    save_native(model.to_bridge(), out, "model.pt")
    final = history[-1]
    (out / "model.json").write_text(json.dumps({
        "format": "native", "checkpoint": "model.pt",
        "description": (f"1-layer transformer trained on (a + b) mod {args.p} (Nanda et al. 2023 config, "
                        f"{args.frac_train:.0%} of pairs, seed {args.seed}) for {args.epochs} epochs: "
                        f"test accuracy {final['test_acc']:.4f}. Checkpoints in checkpoints/."),
    }, indent=1) + "\n")
    write_checksums(out)
    print(f"Done in {final['seconds'] / 60:.1f} min: {final}")


if __name__ == "__main__":
    main()
