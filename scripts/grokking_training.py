"""The data, loss and full-batch training loop that made the shipped grokking run (utils/assets/grokking_p113).

These answer four of chapter 4's graded exercises (the dataset, the split, the float64 loss and the training
loop), so they live here, beside the scripts that use them, and not in the learner-visible package: the
package `micourse.grokking` has only the model (`FastModAddModel`) and the settings.

Used by scripts/train_grokking.py and scripts/verify_grokking.py (run as `python scripts/...`), by
bench/bench_grokking.py and by tests/ch04_grokking (imported as `scripts.grokking_training` from the
repository root).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from micourse.grokking import BETAS, LR, WARMUP_STEPS, WEIGHT_DECAY, FastModAddModel


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------
def make_dataset(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All p * p examples: tokens [a, b, p] of shape (p*p, 3) and labels (a + b) % p of shape (p*p,).

    Example i is the pair a = i // p, b = i % p.
    """
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    return tokens, (a + b) % p


def train_test_split(p: int, frac_train: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and test examples: the first `frac_train` of `torch.randperm(p*p)`."""
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n_train = int(frac_train * p * p)
    return perm[:n_train], perm[n_train:]


# ----------------------------------------------------------------------------------------------------
# Loss and training
# ----------------------------------------------------------------------------------------------------
def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy, computed in float64 (float32 log-softmax is quantised near 0, see chapter 4)."""
    log_probs = logits.to(torch.float64).log_softmax(dim=-1)
    return -log_probs.gather(-1, labels[:, None]).mean()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=-1) == labels).float().mean())


def make_optimizer(model: nn.Module, lr: float = LR, weight_decay: float = WEIGHT_DECAY,
                   betas: tuple[float, float] = BETAS, warmup_steps: int = WARMUP_STEPS):
    """AdamW with the paper's linear warm-up (lr * min(step / warmup_steps, 1))."""
    trainable = [w for w in model.parameters() if w.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(step / warmup_steps, 1.0))
    return optimizer, scheduler


@dataclass
class Data:
    """Train and test examples of one split, as operands (a, b) and labels."""
    p: int
    train_a: torch.Tensor
    train_b: torch.Tensor
    train_labels: torch.Tensor
    test_a: torch.Tensor
    test_b: torch.Tensor
    test_labels: torch.Tensor

    @classmethod
    def make(cls, p: int, frac_train: float = 0.3, seed: int = 0) -> Data:
        tokens, labels = make_dataset(p)
        train, test = train_test_split(p, frac_train, seed)
        return cls(p, tokens[train, 0], tokens[train, 1], labels[train],
                   tokens[test, 0], tokens[test, 1], labels[test])


@torch.no_grad()
def evaluate(model: FastModAddModel, data: Data) -> dict[str, float]:
    """Train and test loss and accuracy, and the sum of squared weights."""
    train_logits = model(data.train_a, data.train_b)
    test_logits = model(data.test_a, data.test_b)
    return {"train_loss": float(loss_fn(train_logits, data.train_labels)),
            "test_loss": float(loss_fn(test_logits, data.test_labels)),
            "train_acc": accuracy(train_logits, data.train_labels),
            "test_acc": accuracy(test_logits, data.test_labels),
            "sum_sq_weights": sum(float(w.detach().double().pow(2).sum()) for w in model.parameters())}


def train(model: FastModAddModel, data: Data, epochs: int, lr: float = LR, weight_decay: float = WEIGHT_DECAY,
          log_every: int = 100, callback=None, stop_at_test_acc: float | None = None,
          progress: bool = True) -> list[dict]:
    """Full-batch training (one step = one epoch) with AdamW. Returns the logged metrics.

    Every `log_every` epochs (and at epoch 0) `evaluate` is logged, with the epoch and elapsed seconds,
    and `callback(epoch, model, row)` is called if given. Training stops early once test accuracy reaches
    `stop_at_test_acc` (if given).
    """
    from tqdm.auto import tqdm

    optimizer, scheduler = make_optimizer(model, lr, weight_decay)
    history, start = [], time.perf_counter()
    with tqdm(total=epochs, disable=not progress, desc=f"p={data.p}",
              mininterval=0.5 if sys.stderr.isatty() else 30) as bar:  # a quiet log file in the background
        for epoch in range(epochs + 1):
            if epoch % log_every == 0 or epoch == epochs:
                row = {"epoch": epoch, "seconds": round(time.perf_counter() - start, 2), **evaluate(model, data)}
                history.append(row)
                bar.set_postfix(train=f"{row['train_loss']:.2e}", test=f"{row['test_loss']:.2e}",
                                acc=f"{row['test_acc']:.3f}", refresh=False)
                if callback is not None:
                    callback(epoch, model, row)
                if stop_at_test_acc is not None and row["test_acc"] >= stop_at_test_acc:
                    bar.total = bar.n  # stopped early: end the bar as complete
                    break
            if epoch == epochs:
                break
            loss = loss_fn(model(data.train_a, data.train_b), data.train_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
    return history
