"""Seconds per full-batch training epoch on the grokking task (p = 113, 30 % of pairs = 3830 examples):
the plain TransformerLens model vs `micourse.grokking.FastModAddModel`, on the same weights.

Both do the same thing per epoch: forward on every training example, float64 cross-entropy at the last
position, backward, one AdamW step on the same trained tensors.

Usage: python bench/bench_grokking.py [--epochs 20]   (MICOURSE_THREADS sets the thread count, default 1)
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from micourse import grokking
from scripts import grokking_training as training


def seconds_per_epoch(step, epochs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(epochs):
        step()
    return (time.perf_counter() - start) / epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the two this many times")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("MICOURSE_THREADS", "1")))

    p = 113
    data = training.Data.make(p, frac_train=0.3, seed=0)
    tokens, labels = training.make_dataset(p)
    train_tokens = tokens[training.train_test_split(p, 0.3, 0)[0]]

    fast = grokking.FastModAddModel(p, seed=0)
    bridge = fast.to_bridge()
    bridge.train()
    bridge_params = bridge.state_dict(keep_vars=True)
    for name in grokking.FIXED_ZERO:  # train the same tensors as the fast model
        bridge_params[grokking.STATE_DICT_NAMES[name]].requires_grad_(False)

    fast_opt, fast_sched = training.make_optimizer(fast)
    bridge_opt, bridge_sched = training.make_optimizer(bridge)

    def fast_step():
        loss = training.loss_fn(fast(data.train_a, data.train_b), data.train_labels)
        fast_opt.zero_grad(set_to_none=True)
        loss.backward()
        fast_opt.step()
        fast_sched.step()

    def bridge_step():
        loss = training.loss_fn(bridge(train_tokens)[:, -1], data.train_labels)
        bridge_opt.zero_grad(set_to_none=True)
        loss.backward()
        bridge_opt.step()
        bridge_sched.step()

    # Alternate, and keep each one's best round: other processes on a shared machine slow both alike.
    times = {"TransformerLens": [], "fast": []}
    for _ in range(args.rounds):
        times["TransformerLens"].append(seconds_per_epoch(bridge_step, args.epochs))
        times["fast"].append(seconds_per_epoch(fast_step, args.epochs))
    tl, fa = min(times["TransformerLens"]), min(times["fast"])
    print(f"threads {torch.get_num_threads()}, {len(data.train_labels)} training examples, "
          f"{args.epochs} epochs x {args.rounds} rounds (best round)")
    print(f"TransformerLens model: {tl:.4f} s/epoch   (rounds: {', '.join(f'{t:.4f}' for t in times['TransformerLens'])})")
    print(f"fast table trainer:    {fa:.4f} s/epoch   (rounds: {', '.join(f'{t:.4f}' for t in times['fast'])})")
    print(f"speed-up: {tl / fa:.2f}x")


if __name__ == "__main__":
    main()
