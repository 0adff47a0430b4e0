"""Time activation patching of every head at every position against attribution patching (chapter 6).

On the shipped IOI model `ioi_gpt2_2l` (or GPT-2 small with --gpt2, if it can be loaded), with the notebook's prompts
(8 prompts of IOI template 0, S2 flipped), using the reference solutions of solutions/06_attribution:
- activation patching: `act_patch_heads_by_pos` (one forward pass per layer x position x head);
- attribution patching: a clean forward pass with a cache, then `acts_and_grads` on the corrupted prompts (forward and
  backward) and `attr_heads_by_pos`: three passes (plus one forward pass on the corrupted prompts for the scale of the
  normalised metric, which a notebook computes once anyway).
Prints both times (wall and process CPU; the cores may be shared), their ratio and the correlation of the two results,
in one run.

Usage: python -m bench.bench_attribution [--repeats 3] [--gpt2] [--prompts 8]
(MICOURSE_THREADS sets the thread count, default 1)
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MICOURSE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tools.notebooks import load_definitions, solution_sources  # noqa: E402


def timed(fn, repeats: int):
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.process_time() - cpu)
    return out, best_wall, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="attribution is timed this often (best kept); exact once")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--gpt2", action="store_true", help="GPT-2 small from the hub instead of the shipped model")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("MICOURSE_THREADS", "1")))
    if args.gpt2:
        os.environ["MICOURSE_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "0"

    from micourse import ioi
    from micourse.models import load_model

    ref = load_definitions(solution_sources("06_attribution"), name="bench_attribution").module
    model = load_model("gpt2", offline_alternative="ioi_gpt2_2l") if args.gpt2 else load_model("ioi_gpt2_2l")
    data = ioi.make_ioi_data(args.prompts, seed=0, templates=[0])
    clean = data.tokens
    corrupted = clean.clone()
    corrupted[torch.arange(len(data)), data.word_idx["S2"]] = data.io_ids
    answers, end = data.answer_ids, data.word_idx["end"]
    n_layers = model.cfg.n_layers
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]

    def attribution():
        with torch.no_grad():
            clean_logits, cache = model.run_with_cache(clean, names_filter=lambda name: name in names)
            clean_ld = ref.mean_logit_diff(clean_logits, answers, end)
            corrupted_ld = ref.mean_logit_diff(model(corrupted), answers, end)  # the metric's scale (a 4th, cheap pass)
        _, base, grads = ref.acts_and_grads(model, corrupted, answers, end, clean_ld, corrupted_ld, names)
        return ref.attr_heads_by_pos(base, {name: cache[name] for name in names}, grads, n_layers)

    attribution()  # warm-up
    attr, attr_wall, attr_cpu = timed(attribution, args.repeats)
    exact, exact_wall, exact_cpu = timed(lambda: ref.act_patch_heads_by_pos(model, clean, corrupted, answers, end), 1)
    n_passes = n_layers * clean.shape[1] * model.cfg.n_heads
    print(f"model {getattr(model, 'course_name', '?')}, {len(data)} prompts x {clean.shape[1]} positions, "
          f"{n_layers} layers x {model.cfg.n_heads} heads, {torch.get_num_threads()} thread(s), load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"activation patching, all heads x positions ({n_passes} forward passes): {exact_wall:.2f} s wall, {exact_cpu:.2f} s CPU")
    print(f"attribution patching (clean forward, corrupted forward + backward, and one forward for the metric scale): "
          f"{attr_wall:.3f} s wall, {attr_cpu:.3f} s CPU")
    print(f"ratio activation / attribution: {exact_wall / attr_wall:.1f}x wall, {exact_cpu / attr_cpu:.1f}x CPU; "
          f"correlation of the two results {ref.pearson_correlation(attr, exact):.3f}")


if __name__ == "__main__":
    main()
