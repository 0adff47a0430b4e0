"""Torch threads: 1 against 2 (or N) on the course's two kinds of CPU work, to back micourse's thread policy.

- toy training loops (chapters 4 and 5: a few thousand Adam steps on tensors of a few thousand numbers);
- a GPT-2-small-sized forward pass with a cache (chapters 2 and 3 on GPT-2: 12 layers, 12 heads, d_model 768,
  random weights from `micourse.models.write_random_gpt2`), batch 8 x 20 tokens as in chapter 3's IOI batches.

    python -m bench.bench_threads [--threads 1,2]

Prints wall and process-CPU seconds per workload and thread count, and the speed-up of each thread count over 1.
On shared cores wall time is what a learner waits for; CPU time shows how much work spinning threads add.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def toy_training(steps: int = 300) -> None:
    """A chapter-5-sized toy model (5 features, 2 hidden, ReLU output), trained with Adam."""
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(8, 5, 2) * 0.1)
    b = torch.nn.Parameter(torch.zeros(8, 5))
    opt = torch.optim.Adam([W, b], lr=1e-2)
    importance = 0.9 ** torch.arange(5)
    for _ in range(steps):
        x = torch.rand(1024, 8, 5) * (torch.rand(1024, 8, 5) < 0.1)
        h = torch.einsum("bif,ifh->bih", x, W)
        out = torch.relu(torch.einsum("bih,ifh->bif", h, W) + b)
        loss = (importance * (out - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def gpt2_forward(model, tokens, repeats: int = 2) -> None:
    with torch.no_grad():
        for _ in range(repeats):
            model.run_with_cache(tokens)


def timed(fn, *args) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="thread counts to compare (comma-separated)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (contention varies over time)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.threads.split(",")]
    from micourse import models

    with tempfile.TemporaryDirectory() as tmp:
        model = models.load_hf_folder(models.write_random_gpt2(tmp))
    tokens = torch.randint(0, 50257, (8, 20))
    results: dict = {}
    for _ in range(args.rounds):
        for n in counts:
            torch.set_num_threads(n)
            gpt2_forward(model, tokens, 1)  # warm-up at this thread count
            for name, fn, fargs in (("toy training loop (300 Adam steps)", toy_training, ()),
                                    ("GPT-2-sized forward + cache (2 x 8x20 tokens)", gpt2_forward, (model, tokens))):
                w, c = timed(fn, *fargs)
                print(f"  {name}, threads={n}: wall {w:.2f} s, cpu {c:.2f} s", flush=True)
                best = results.get((name, n))
                results[(name, n)] = (w, c) if best is None or w < best[0] else best
    print(f"cores: {os.cpu_count()}, rounds: {args.rounds} (best of)")
    for name in dict.fromkeys(k[0] for k in results):
        base = results[(name, counts[0])][0]
        for n in counts:
            w, c = results[(name, n)]
            print(f"{name:48s} threads={n}: wall {w:6.2f} s  cpu {c:6.2f} s  speed-up vs {counts[0]}: {base / w:4.2f}x")


if __name__ == "__main__":
    main()
