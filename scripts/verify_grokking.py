"""Check the shipped grokking run (utils/assets/grokking_p113) against the paper's findings.

- the final model (loaded with `load_model`) has test accuracy >= 0.99;
- its embedding is sparse in the Fourier basis: 3-7 key frequencies hold >= 80 % of its squared norm;
- over the checkpoints: restricted loss (logits kept only along cos/sin(w_k (a+b)) for key k, plus the
  mean) stays below the test loss after initialisation and falls under 1 before the test loss does, and
  the final excluded loss (those components removed), on the training set, is over 10x the training loss.

These are the measures the chapter's learners implement as exercises; this script is the reference
check that the shipped run shows them. Usage: python scripts/verify_grokking.py [--name grokking_p113]
"""

from __future__ import annotations

import argparse
import json
import math
import os

import torch

from micourse import grokking
from micourse.models import asset_dir, load_checkpoint_series, load_model

try:  # from the repository root (tests, bench)
    from scripts import grokking_training as training
except ImportError:  # run as `python scripts/<this file>.py`
    import grokking_training as training


def fourier_basis(p: int) -> tuple[torch.Tensor, list[str]]:
    """Rows: constant, then cos and sin of 2 pi k x / p for k = 1..(p-1)/2, each of unit norm. (p, p)."""
    x = torch.arange(p, dtype=torch.float64)
    rows, names = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        names += [f"cos {k}", f"sin {k}"]
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True), names


def embedding_frequency_shares(W_E: torch.Tensor, p: int) -> torch.Tensor:
    """Share of the (number tokens') embedding's squared norm on each frequency k = 1..(p-1)/2: (p//2,)."""
    basis, _ = fourier_basis(p)
    coeffs = basis @ W_E[:p].double()                                   # (p, d_model)
    sq = coeffs.pow(2).sum(dim=1)
    per_freq = sq[1::2] + sq[2::2]                                      # cos + sin of each frequency
    return per_freq / sq.sum()


def sum_frequency_directions(p: int, freqs: list[int]) -> torch.Tensor:
    """Orthonormal vectors over all p*p pairs (pair i = (i // p, i % p)): cos and sin of w_k (a + b). (2K, p*p)."""
    tokens, _ = training.make_dataset(p)
    s = (tokens[:, 0] + tokens[:, 1]).double()
    vecs = []
    for k in freqs:
        vecs += [torch.cos(2 * math.pi * k * s / p), torch.sin(2 * math.pi * k * s / p)]
    vecs = torch.stack(vecs)
    return vecs / vecs.norm(dim=1, keepdim=True)


def restricted_and_excluded_logits(logits: torch.Tensor, p: int, key_freqs: list[int]):
    """Split all-pairs logits (p*p, p) into the part along cos/sin(w_k (a+b)) of key k plus the mean over
    pairs (restricted), and the rest with only those key components removed (excluded)."""
    logits = logits.double()
    dirs = sum_frequency_directions(p, key_freqs)                       # (2K, p*p)
    key_part = dirs.T @ (dirs @ logits)                                  # projection over the pair axis
    restricted = logits.mean(dim=0, keepdim=True) + key_part
    excluded = logits - key_part
    return restricted, excluded


@torch.no_grad()
def progress_measures(epochs, states, p, key_freqs, train_idx, test_idx):
    tokens, labels = training.make_dataset(p)
    model = grokking.FastModAddModel(p)
    rows = []
    for epoch, state in zip(epochs, states):
        model.load_bridge_state_dict(state)
        logits = model(tokens[:, 0], tokens[:, 1])
        restricted, excluded = restricted_and_excluded_logits(logits, p, key_freqs)
        rows.append({
            "epoch": epoch,
            "train_loss": float(training.loss_fn(logits[train_idx], labels[train_idx])),
            "test_loss": float(training.loss_fn(logits[test_idx], labels[test_idx])),
            "test_acc": training.accuracy(logits[test_idx], labels[test_idx]),
            "restricted_loss": float(training.loss_fn(restricted, labels)),
            "excluded_loss_train": float(training.loss_fn(excluded[train_idx], labels[train_idx])),
            "key_freq_share": float(embedding_frequency_shares(state["embed.weight"], p)[
                [k - 1 for k in key_freqs]].sum()),
        })
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="grokking_p113")
    parser.add_argument("--key-threshold", type=float, default=0.05,
                        help="a frequency is key if it holds at least this share of the embedding's squared norm")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("MICOURSE_THREADS", "1")))
    config = json.loads((asset_dir(args.name) / "metrics.json").read_text())["config"]
    p = config["p"]
    train_idx, test_idx = training.train_test_split(p, config["frac_train"], config["split_seed"])
    tokens, labels = training.make_dataset(p)
    ok = True

    # 1. The final model.
    fast = grokking.FastModAddModel.from_bridge(load_model(args.name)).requires_grad_(False)
    logits = fast(tokens[:, 0], tokens[:, 1])
    test_acc = training.accuracy(logits[test_idx], labels[test_idx])
    print(f"final model: train loss {float(training.loss_fn(logits[train_idx], labels[train_idx])):.3e}, "
          f"test loss {float(training.loss_fn(logits[test_idx], labels[test_idx])):.3e}, test accuracy {test_acc:.4f}")
    ok &= test_acc >= 0.99

    # 2. Key frequencies of the embedding.
    shares = embedding_frequency_shares(fast.W_E, p)
    order = shares.argsort(descending=True)
    print("largest frequency shares of ||W_E||^2:",
          ", ".join(f"k={int(i) + 1}: {float(shares[i]):.4f}" for i in order[:10]))
    key_freqs = sorted(int(i) + 1 for i in order if shares[i] >= args.key_threshold)
    key_share = float(shares[[k - 1 for k in key_freqs]].sum())
    print(f"key frequencies (share >= {args.key_threshold}): {key_freqs}, holding {key_share:.4f} of the squared norm")
    ok &= 3 <= len(key_freqs) <= 7 and key_share >= 0.8

    # 3. Progress measures over the checkpoints.
    epochs, states = load_checkpoint_series(args.name)
    rows = progress_measures(epochs, states, p, key_freqs, train_idx, test_idx)
    print(f"{'epoch':>6} {'train':>9} {'test':>9} {'acc':>6} {'restricted':>10} {'excluded':>9} {'key share':>9}")
    for r in rows:
        print(f"{r['epoch']:>6} {r['train_loss']:9.2e} {r['test_loss']:9.2e} {r['test_acc']:6.3f} "
              f"{r['restricted_loss']:10.2e} {r['excluded_loss_train']:9.2e} {r['key_freq_share']:9.3f}")
    # At epoch 0 both losses are ~ln p, so "restricted below test" alone says little: ask that restricted
    # loss stays below test loss after initialisation, and falls under 1 well before test loss does.
    first_test_under_1 = next((r["epoch"] for r in rows if r["test_loss"] < 1), None)
    first_restricted_under_1 = next((r for r in rows if r["restricted_loss"] < 1), None)
    always_below = all(r["restricted_loss"] < r["test_loss"] for r in rows[1:])
    print(f"restricted loss below test loss at every checkpoint after epoch 0: {always_below}")
    if first_restricted_under_1 is not None:
        print(f"restricted loss first under 1 at epoch {first_restricted_under_1['epoch']} "
              f"(test loss then {first_restricted_under_1['test_loss']:.3g}); "
              f"test loss first under 1 at epoch {first_test_under_1}")
    ok &= always_below and first_restricted_under_1 is not None and first_test_under_1 is not None \
        and first_restricted_under_1["epoch"] < first_test_under_1
    last = rows[-1]
    ratio = last["excluded_loss_train"] / last["train_loss"]
    print(f"final excluded loss (train) {last['excluded_loss_train']:.3e} = {ratio:.3g} x train loss {last['train_loss']:.3e}")
    ok &= ratio > 10
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
