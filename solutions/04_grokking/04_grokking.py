# %% [markdown]
# # Chapter 4 · Grokking modular addition
#
# A small transformer trained on `(a + b) mod p` first memorises its training pairs: training loss goes to
# almost zero while the loss on pairs it has not seen gets *worse*. Then, thousands of epochs later, the
# test loss falls and the model gets every unseen pair right. This delayed generalisation is called
# **grokking** (Power et al. 2022). Nanda et al. (2023), *Progress measures for grokking via mechanistic
# interpretability* (<https://arxiv.org/abs/2301.05217>), reverse-engineered the algorithm such a model
# learns and used it to show that the jump is not sudden inside the model. The generalising circuit grows
# slowly the whole time, and the jump comes when weight decay clears away the memorised solution.
#
# This chapter follows the paper in three parts.
#
# **Part 1 · The task.** You build the dataset and its train/test split, the float64 cross-entropy, and a
# full-batch training loop. Then you train a small model in this notebook and watch it grok.
#
# **Part 2 · Read the algorithm.** On a model trained with the paper's settings (it ships with the course)
# you take the weights apart in the Fourier basis. You will find a few key frequencies in the embedding,
# neurons that fire periodically in `a` and `b`, and logits that are a sum of `cos(w (a + b - c))` terms.
#
# **Part 3 · Progress measures.** Over 49 checkpoints of that training run you compute the paper's
# measures (restricted loss, excluded loss, weight norm) and mark the three phases of training:
# memorisation, circuit formation and clean-up.
#
# Conventions. TransformerLens multiplies row vectors from the left (`x @ W_in`). Example `i` of the
# dataset is the pair `a = i // p`, `b = i % p`, so a tensor over all pairs reshapes to a `[p, p]` grid with
# `a` down the rows and `b` across the columns. Every exercise has a visible check (`check(fn)`); graders
# run more checks.

# %%
import json
import math

import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

import micourse.models
import micourse.plots as plots
from micourse.checks import check
from micourse.grokking import (BETAS, GROKKED_ACC, LR, PLATEAU_ACC, SMALL_CONFIG, WARMUP_STEPS, WEIGHT_DECAY,
                               FastModAddModel, delayed_generalisation)

# %% [markdown]
# # Part 1 · The task, and grokking in front of you
#
# **Learning objectives**
# - Build the modular-addition dataset and a seeded train/test split.
# - Say why we compute the loss in float64 once a model has memorised its training set.
# - Write a full-batch AdamW training loop with the paper's settings.
# - Watch a model grok: a plateau of low test accuracy after the training set is memorised, then a jump.
#
# The setup of the paper (section 3): the model sees three tokens `a b =` and predicts `(a + b) mod p` at the
# `=` position. The numbers `0 .. p-1` are tokens `0 .. p-1`, and `=` is token `p`. There are only `p * p`
# possible inputs, and the model is trained on a fixed random fraction of them (30 % for `p = 113`). The
# other pairs are the test set.

# %% [markdown]
# ## Exercise: the dataset
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# Everything in this chapter indexes pairs the same way, so grids over `(a, b)` and the model's inputs line up.
#
# Build `modular_addition_data(p)`: return `(tokens, labels)` where `tokens` is `[p * p, 3]` (integer) with row
# `i` equal to `[a, b, p]` for `a = i // p`, `b = i % p`, and `labels` is `[p * p]` with `(a + b) % p`. It works
# when row 7 for `p = 5` is `[1, 2, 5]` with label 3.
#
# <details><summary>Hint 1</summary><code>torch.arange(p).repeat_interleave(p)</code> is <code>0,0,..,0,1,1,..</code> (that's <code>a</code>); <code>torch.arange(p).repeat(p)</code> is <code>0,1,..,p-1,0,1,..</code> (that's <code>b</code>).</details>
# <details><summary>Hint 2</summary><code>torch.stack([a, b, torch.full_like(a, p)], dim=1)</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "modular_addition_data", "locked": false, "schema_version": 3, "solution": true}
def modular_addition_data(p: int) -> tuple[Int[Tensor, "pairs 3"], Int[Tensor, "pairs"]]:
    """All p*p inputs [a, b, p] (row i: a = i // p, b = i % p) and their labels (a + b) % p."""
    ### BEGIN SOLUTION
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    return tokens, (a + b) % p
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_modular_addition_data", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(modular_addition_data)

# %% [markdown]
# ## Exercise: a seeded train/test split
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# Grokking is about the pairs the model never trains on, so the split must be fixed and reproducible: the
# course's shipped run used exactly this split, and Part 3 recomputes its training and test losses.
#
# Build `split_indices(p, frac_train, seed)`: shuffle the `p * p` example indices with
# `torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))`; the first `int(frac_train * p * p)`
# are the training set and the rest the test set. Return `(train_idx, test_idx)`, two integer tensors, in the
# shuffled order. It works when the two are disjoint, cover every index, and the training set of `p = 113`
# with 30 % has 3830 examples.
#
# <details><summary>Hint</summary><code>int(...)</code> rounds down; <code>round</code> would give one example too many for <code>p = 113</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "split_indices", "locked": false, "schema_version": 3, "solution": true}
def split_indices(p: int, frac_train: float, seed: int = 0) -> tuple[Int[Tensor, "n_train"], Int[Tensor, "n_test"]]:
    """(train indices, test indices): the first int(frac_train * p * p) of a seeded permutation, and the rest."""
    ### BEGIN SOLUTION
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n_train = int(frac_train * p * p)
    return perm[:n_train], perm[n_train:]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_split_indices", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(split_indices)

# %% [markdown]
# ## Exercise: cross-entropy in float64
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# After memorisation the model gives each training answer a probability like `1 - 1e-7`, a loss of about
# `1e-7` per pair. Float32 can represent `1e-7` (its smallest normal number is about `1e-38`), but float32
# `log_softmax` cannot produce it. It computes `logit - logsumexp(logits)`, and `logsumexp` is the largest logit
# plus `log(1 + ε)`, where `ε` is the sum of the other answers' `exp(logit - largest)`. In float32, `1 + ε` is
# rounded to a multiple of `2^-23 ≈ 1.19e-7` (float32 numbers near 1 are that far apart; a term below half of
# that, about `6e-8`, added to 1 is lost): the loss of a right answer is 0 or a whole number of steps of `1.19e-7`.
# So near `1e-7` a float32 loss is quantised: it cannot follow the slow fall of the training loss in Part 3. (The gradient does not vanish: the
# wrong answers' probabilities, like `1e-9`, are fine in float32; but the part of it through the right answer's
# logit is rounded the same way.) In float64 the step is `2^-52 ≈ 2.2e-16` near 1 (and a few times more near a large
# logit such as 30, depending on how the subtraction is done), far below anything this chapter measures.
#
# Build `cross_entropy_float64(logits, labels)`: `logits` is `[batch, p]` (any float dtype), `labels` is
# `[batch]`; convert the logits to float64 *before* the softmax and return the mean of
# `-log_softmax(logits)[i, labels[i]]` as a 0-dimensional float64 tensor that gradients flow through. It works
# when a logit margin of 30 gives a tiny positive loss instead of 0.
#
# <details><summary>Hint 1</summary>The conversion must come before anything that can round: the softmax itself. After it, float64 cannot bring back what float32 rounded away.</details>
# <details><summary>Hint 2</summary><code>Tensor.to(torch.float64)</code>, then <code>log_softmax</code> over the answers; pick each row's label with <code>gather</code> (or advanced indexing) and average.</details>

# %% nbgrader={"grade": false, "grade_id": "cross_entropy_float64", "locked": false, "schema_version": 3, "solution": true}
def cross_entropy_float64(logits: Float[Tensor, "batch p"], labels: Int[Tensor, "batch"]) -> Float[Tensor, ""]:
    """Mean cross-entropy of the labels under softmax(logits), computed in float64."""
    ### BEGIN SOLUTION
    log_probs = logits.to(torch.float64).log_softmax(dim=-1)
    return -log_probs.gather(-1, labels[:, None]).mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_cross_entropy_float64", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(cross_entropy_float64)

# %% [markdown]
# What float32 does to a confident right answer: its logit is `margin` above 4 others, so the exact loss is
# `ln(1 + 4 e^-margin)`. You should see float32 return only whole multiples of `2^-23`,
# and exactly 0 at margins 19 and 30, where the exact losses are about `2e-8` and `4e-13`; float64 comes within a
# few of its own steps of the exact value every time (a few times `2^-52`, scaled by the largest logit), so it can
# differ from the exact value in the third or fourth digit at margin 30 while float32 has lost it entirely (the
# asserts check all three).

# %%
STEP = 2.0 ** -23  # the spacing of float32 numbers just above 1
for margin in (14.0, 16.0, 19.0, 30.0):
    confident = torch.tensor([[margin, 0.0, 0.0, 0.0, 0.0]])
    exact = math.log1p(4 * math.exp(-margin))
    in_float64 = cross_entropy_float64(confident, torch.tensor([0])).item()
    in_float32 = -confident.log_softmax(-1)[0, 0].item() + 0.0  # + 0.0 turns -0.0 into 0.0
    print(f"margin {margin:4.0f}: exact {exact:.4e}, float64 {in_float64:.4e}, float32 {in_float32:.4e} "
          f"= {in_float32 / STEP:.2f} x 2^-23")
    float64_tolerance = 8 * margin * 2.0 ** -52  # a few steps of float64 at the size of the largest logit
    assert abs(in_float32 / STEP - round(in_float32 / STEP)) < 0.01, "float32 gives whole multiples of 2^-23"
    assert (in_float32 == 0) == (margin >= 19), "float32 rounds the loss to exactly 0 from margin 19 on"
    assert abs(in_float64 - exact) <= float64_tolerance, (
        f"your float64 loss is {abs(in_float64 - exact):.2e} from the exact value, more than a few float64 steps")

# %% [markdown]
# ## The model, and a fast version of it
#
# The paper's model (section 3): one transformer layer with `d_model = 128`, 4 attention heads of size 32, an
# MLP with 512 ReLU neurons, no LayerNorm, learned positional embeddings, untied embedding and unembedding.
# Full-batch AdamW with learning rate `1e-3`, weight decay 1 and betas `(0.9, 0.98)`, and a linear warm-up:
# step `t` (counting from 0) uses learning rate `lr * min(t / 10, 1)`.
#
# The course's `micourse.grokking.FastModAddModel` is this network with the paper's initialisation. It computes
# exactly what the TransformerLens model computes (its tests compare logits, losses and gradients), only
# about five times faster. The trick: only the `=` position's output matters, and its query is the same for
# every input, so keys and values are computed once per token rather than once per example. Call it as
# `model(a, b)` with two integer tensors of operands; it returns `[batch, p]` logits. Its weights are ordinary
# parameters, and `model.state_dict()` saves them.

# %% [markdown]
# ## Exercise: the training loop
# > Difficulty 3/5 · Importance 5/5 · ~25 min
#
# Grokking is a fact about training, so you need to train. Full batch means one optimizer step per epoch, on
# every training pair at once.
#
# Build `train_model(p, frac_train, epochs, lr, weight_decay, seed, log_every, stop_at_test_acc)`:
# 1. the data: your `modular_addition_data(p)` and `split_indices(p, frac_train, seed)`;
# 2. the model: `FastModAddModel(p, seed=seed)`;
# 3. the optimizer: `torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=BETAS)`
#    with the warm-up above (`WARMUP_STEPS = 10`): `torch.optim.lr_scheduler.LambdaLR` with
#    `lambda step: min(step / WARMUP_STEPS, 1)`, stepped after each optimizer step;
# 4. for `epoch` in `0 .. epochs`: if `epoch % log_every == 0` or `epoch == epochs`, first **log** the current
#    model (no gradients needed): append `epoch`, training and test loss (your `cross_entropy_float64`) and
#    training and test accuracy (fraction of pairs whose largest logit is the label) to the history; then stop
#    if `stop_at_test_acc` is given and the test accuracy just logged is at least that. Then, unless
#    `epoch == epochs`, take one optimizer step on the training loss.
# 5. a progress bar: `with tqdm(total=epochs) as bar:` around the loop, `bar.update()` after each step. A bar
#    closed before it reaches its total shows as failed (red in Jupyter), so when you stop early set
#    `bar.total = bar.n` first: the bar then ends complete at the epoch where training stopped.
#
# Return a dict with lists `"epoch"`, `"train_loss"`, `"test_loss"`, `"train_acc"`, `"test_acc"` (Python
# floats), and `"state_dict"`: the final `model.state_dict()`. So the row for epoch `e` describes the model
# after `e` updates. It works when the first update (learning rate 0) changes nothing, and 20 epochs with the
# paper's settings on `p = 113` log what the course's shipped run logged at epochs 0 and 20.
#
# <details><summary>Hint 1</summary>The model takes the two numbers of each pair as two separate integer tensors: build them (for the training and the test pairs) once, before the loop.</details>
# <details><summary>Hint 2</summary>Each step: compute the loss, clear old gradients, backpropagate, step the optimizer, then step the scheduler (<code>LambdaLR</code> counts its own steps, so the first update uses <code>min(0 / 10, 1) = 0</code>). Log under <code>torch.no_grad()</code> and store plain numbers with <code>.item()</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "train_model", "locked": false, "schema_version": 3, "solution": true}
def train_model(p: int, frac_train: float, epochs: int, lr: float = LR, weight_decay: float = WEIGHT_DECAY,
                seed: int = 0, log_every: int = 50, stop_at_test_acc: float | None = None) -> dict:
    """Full-batch AdamW training of FastModAddModel(p, seed) on a seeded split. Returns the logged history
    ("epoch", "train_loss", "test_loss", "train_acc", "test_acc": lists) and the final "state_dict"."""
    ### BEGIN SOLUTION
    tokens, labels = modular_addition_data(p)
    train_idx, test_idx = split_indices(p, frac_train, seed)
    splits = {name: (tokens[idx, 0], tokens[idx, 1], labels[idx]) for name, idx in (("train", train_idx), ("test", test_idx))}
    model = FastModAddModel(p, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=BETAS)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(step / WARMUP_STEPS, 1.0))
    history = {"epoch": [], "train_loss": [], "test_loss": [], "train_acc": [], "test_acc": []}
    with tqdm(total=epochs, desc=f"training p={p}", mininterval=1.0) as bar:
        for epoch in range(epochs + 1):
            if epoch % log_every == 0 or epoch == epochs:
                history["epoch"].append(epoch)
                with torch.no_grad():
                    for name, (a, b, y) in splits.items():
                        logits = model(a, b)
                        history[f"{name}_loss"].append(cross_entropy_float64(logits, y).item())
                        history[f"{name}_acc"].append((logits.argmax(-1) == y).float().mean().item())
                bar.set_postfix(test_acc=f"{history['test_acc'][-1]:.3f}", refresh=False)
                if stop_at_test_acc is not None and history["test_acc"][-1] >= stop_at_test_acc:
                    bar.total = bar.n  # stopped early: the bar ends complete here
                    break
            if epoch == epochs:
                break
            a, b, y = splits["train"]
            loss = cross_entropy_float64(model(a, b), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update()
    history["state_dict"] = {name: w.detach().clone() for name, w in model.state_dict().items()}
    return history
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_train_model", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(train_model)

# %% [markdown]
# ## Grokking, live
#
# The paper's run (`p = 113`, 30 % of pairs) takes about a quarter of an hour on one CPU core. The configuration
# `micourse.grokking.SMALL_CONFIG` groks in front of you in a minute or two: `p = 59`, 30 % of the pairs for
# training, learning rate `3e-3` and weight decay 3, otherwise the paper's settings. A small training fraction
# delays generalisation; the larger weight decay brings the jump within a couple of minutes. We log every `SMALL_CONFIG["log_every"]` epochs
# and stop once the test accuracy reaches `STOP_AT_TEST_ACC`. This cell runs your `train_model`.
#
# What counts as grokking here, exactly (`micourse.grokking.delayed_generalisation` decides it from the log, and
# the cell asserts it): let `M` be the first epoch at which the training accuracy is 1 (memorised). Then
# - **plateau**: the test accuracy stays below 0.3 (`PLATEAU_ACC`) for at least `2 M` more epochs, until an
#   epoch `R`, with the training accuracy 1 all along;
# - **jump**: then the test accuracy reaches 0.95 (`GROKKED_ACC`) quickly, by an epoch `G <= 1.5 R`: climbing from
#   0.3 to 0.95 takes at most half as long as getting to 0.3 did.
#
# The plots shade the three stretches: memorising (`0` to `M`), the plateau (`M` to `R`) and the jump (`R` to `G`).

# %%
STOP_AT_TEST_ACC = 0.99
print("small configuration:", SMALL_CONFIG)
small = train_model(SMALL_CONFIG["p"], SMALL_CONFIG["frac_train"], SMALL_CONFIG["epochs"], lr=SMALL_CONFIG["lr"],
                    weight_decay=SMALL_CONFIG["weight_decay"], seed=0, log_every=SMALL_CONFIG["log_every"],
                    stop_at_test_acc=STOP_AT_TEST_ACC)
live = delayed_generalisation(small["epoch"], small["train_acc"], small["test_acc"])
print(f"memorised (train accuracy 1) at epoch {live['memorised']}; test accuracy below {PLATEAU_ACC} until epoch "
      f"{live['plateau_end']} (a plateau of {live['plateau']} epochs); >= {GROKKED_ACC} at epoch {live['grokked']} "
      f"({live['jump']} epochs later); stopped at epoch {small['epoch'][-1]} (test accuracy {small['test_acc'][-1]:.3f})")
assert live["holds"], f"the live run did not grok by the criterion above ({live}): check train_model against the spec"
assert live["memorised"] <= 100, "expected the training set to be memorised within the first hundred epochs"
assert max(small["test_loss"]) > math.log(SMALL_CONFIG["p"]), "expected the test loss to rise above ln p while memorising"
assert small["test_loss"][-1] < 0.01 * max(small["test_loss"]), "expected the test loss to fall by orders of magnitude"

# %%
def shade_live(fig: go.Figure) -> go.Figure:
    """Mark memorisation, the plateau and the jump of the live run."""
    for x0, x1, name, colour in ((0, live["memorised"], "memorised", "#1f77b4"),
                                 (live["memorised"], live["plateau_end"], "plateau", "#7f7f7f"),
                                 (live["plateau_end"], live["grokked"], "jump", "#2ca02c")):
        fig.add_vrect(x0=x0, x1=x1, fillcolor=colour, opacity=0.12, line_width=0, annotation_text=name,
                      annotation_position="top left")
    return fig


fig = plots.lines(torch.tensor([small["train_acc"], small["test_acc"]]), x=small["epoch"], names=["train", "test"],
                  title=f"Small model (p = {SMALL_CONFIG['p']}): accuracy", x_title="epoch", y_title="accuracy")
fig.add_hline(y=PLATEAU_ACC, line_dash="dot", annotation_text=f"{PLATEAU_ACC}")
shade_live(fig).show()
fig = plots.lines(torch.tensor([small["train_loss"], small["test_loss"]]), x=small["epoch"], names=["train", "test"],
                  title="Small model: loss", x_title="epoch", y_title="cross-entropy", log_y=True)
fig.add_hline(y=math.log(SMALL_CONFIG["p"]), line_dash="dot", annotation_text="ln p (uniform guess)")
shade_live(fig).show()

# %% [markdown]
# What you should see (the asserts above check each fact in it). The training accuracy reaches 1 within the
# first hundred epochs. Then comes the plateau: for many times longer than memorising took, the test accuracy
# stays below 0.3 (it creeps up slowly) while the training accuracy stays at 1. Then, in at most half the time it
# took to get there, the test accuracy jumps to 0.95 and more. While the model memorises, its test loss climbs above `ln p`, the loss
# of a uniform guess: what it memorised makes its guesses on unseen pairs *confidently wrong*. By the time training
# stops, the test loss has fallen by orders of magnitude (more than 100 times) from its peak. Part 3 looks inside
# a run like this for what changes during the plateau.
#
# ### Recap of Part 1
# - The dataset is all `p²` pairs; a seeded split keeps a fixed fraction for training.
# - Once memorised, training losses are `1e-7`-small: float32 rounds them to 0 or whole steps of `1.19e-7`, so
#   compute them in float64.
# - Full-batch AdamW with weight decay and a small training fraction groks: memorise first, a long plateau, then
#   a jump in test accuracy.

# %% [markdown]
# # Part 2 · Reading the algorithm from the weights
#
# **Learning objectives**
# - Build the Fourier basis over `0 .. p-1` and express the embedding in it.
# - Find the key frequencies: the embedding uses only a handful of the `(p-1)/2` frequencies.
# - Show that the MLP neurons fire periodically in `a` and `b`, read their 2D Fourier transform, and cluster
#   neurons by the one frequency that explains them.
# - Show that the logits are a sum of `cos(w_k (a + b - c))` terms, and say which trig identity makes that an
#   addition algorithm.
#
# The algorithm the paper found (section 4). For a few **key frequencies** `w_k = 2πk/p`:
# 1. the embedding maps `a` to `cos(w_k a)` and `sin(w_k a)` (and `b` likewise);
# 2. attention and the MLP multiply them, forming `cos(w_k (a + b)) = cos(w_k a) cos(w_k b) - sin(w_k a) sin(w_k b)`
#    and `sin(w_k (a + b)) = sin(w_k a) cos(w_k b) + cos(w_k a) sin(w_k b)`;
# 3. the unembedding reads off, for each answer `c`,
#    `cos(w_k (a + b - c)) = cos(w_k (a + b)) cos(w_k c) + sin(w_k (a + b)) sin(w_k c)`, which is largest, 1, exactly
#    when `c = (a + b) mod p`. Summing over the key frequencies makes the right answer stand out further.
#
# We read this off `grokking_p113`, a model the course trained with the paper's settings for 16 000 epochs.

# %%
torch.set_grad_enabled(False)  # from here on we only read models (to re-run Part 1's training, set it back to True)
model = micourse.models.load_model("grokking_p113")
run = json.loads((micourse.models.asset_dir("grokking_p113") / "metrics.json").read_text())["config"]
p = run["p"]
tokens, labels = modular_addition_data(p)
train_idx, test_idx = split_indices(p, run["frac_train"], run["split_seed"])
logits_all = model(tokens)[:, -1]  # [p*p, p]: the prediction at the '=' position
print("training run:", run)
print(f"test accuracy of the final model: {(logits_all[test_idx].argmax(-1) == labels[test_idx]).float().mean():.4f}")

# %% [markdown]
# ## Exercise: the Fourier basis
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# Any function of `x ∈ {0, .., p-1}` is a combination of a constant and the waves `cos(2πkx/p)`, `sin(2πkx/p)` for
# `k = 1 .. (p-1)/2` (for odd `p`). These `p` functions, normalised, form an orthonormal basis of `R^p`: the
# discrete Fourier basis, written with real numbers (paper, section 4).
#
# Build `fourier_basis(p)` for odd `p`: a float32 `[p, p]` tensor whose rows are, in order, the constant,
# then `cos(2π·1·x/p)`, `sin(2π·1·x/p)`, `cos(2π·2·x/p)`, `sin(2π·2·x/p)`, ..., each divided by its norm. So row
# `2k - 1` is frequency `k`'s cosine and row `2k` its sine. It works when `basis @ basis.T` is the identity.
#
# <details><summary>Hint 1</summary><code>x = torch.arange(p)</code>; build a list of rows and <code>torch.stack</code> them.</details>
# <details><summary>Hint 2</summary>Normalise every row: <code>basis / basis.norm(dim=1, keepdim=True)</code>. The constant row becomes <code>1/sqrt(p)</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "fourier_basis", "locked": false, "schema_version": 3, "solution": true}
def fourier_basis(p: int) -> Float[Tensor, "p p"]:
    """Orthonormal real Fourier basis over 0..p-1: rows const, cos 1, sin 1, cos 2, sin 2, ... (float32)."""
    ### BEGIN SOLUTION
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).float()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_fourier_basis", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(fourier_basis)

# %% [markdown]
# Names for the rows, for plot labels, and the first rows of the basis for `p = 113`.

# %%
def fourier_names(p: int) -> list[str]:
    """Labels of fourier_basis(p)'s rows: 'const', 'cos 1', 'sin 1', 'cos 2', ..."""
    return ["const"] + [f"{trig} {k}" for k in range(1, p // 2 + 1) for trig in ("cos", "sin")]


basis = fourier_basis(p)
names = fourier_names(p)
plots.heatmap(basis[:9], x_labels=range(p), y_labels=names[:9], title="The first rows of the Fourier basis",
              x_title="x", y_title="basis vector")

# %% [markdown]
# ## Exercise: the embedding in the Fourier basis
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# The embedding `W_E` has one row per token. Multiplying by the basis rewrites the `p` number tokens' rows as
# coefficients on the constant and on each wave: row `j` of the result says how much of `W_E` (over tokens)
# goes along basis vector `j`, in each of the `d_model` directions.
#
# Build `embedding_in_fourier_basis(W_E, basis)`: `W_E` is `[p + 1, d_model]` (the last row is the `=` token,
# drop it), `basis` is `[p, p]`; return `basis @ W_E[:p]`, `[p, d_model]`. It works when an embedding made of
# basis rows comes back as the identity.
#
# <details><summary>Hint</summary>The result's row <code>j</code> is <code>sum_x basis[j, x] * W_E[x]</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "embedding_in_fourier_basis", "locked": false, "schema_version": 3, "solution": true}
def embedding_in_fourier_basis(W_E: Float[Tensor, "d_vocab d_model"], basis: Float[Tensor, "p p"]) -> Float[Tensor, "p d_model"]:
    """The number tokens' embedding in the Fourier basis: basis @ W_E[:p]."""
    ### BEGIN SOLUTION
    p = basis.shape[0]
    return basis @ W_E[:p].to(basis.dtype)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_embedding_in_fourier_basis", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(embedding_in_fourier_basis)

# %% [markdown]
# ## Exercise: how much of the embedding each frequency holds
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# A frequency `k` has two basis vectors, `cos k` and `sin k`; together they are a 2D plane in which token `x`
# sits at angle `w_k x`. The share of the embedding's squared norm in that plane says how much the model
# uses frequency `k`.
#
# Build `frequency_shares(fourier_embedding)`: input `[p, d_model]` from the exercise above (row order as in
# `fourier_basis`); return a `[(p - 1) / 2]` tensor whose entry `k - 1` is
# `(||row cos k||² + ||row sin k||²) / (squared norm of the whole input)`. The constant row counts in the
# total but belongs to no frequency, so the shares sum to at most 1. It works when an embedding made only of
# `cos 2` gives share 1 at frequency 2.
#
# <details><summary>Hint 1</summary><code>sq = fourier_embedding.pow(2).sum(-1)</code> is each row's squared norm.</details>
# <details><summary>Hint 2</summary>Rows <code>1, 3, 5, ..</code> are the cosines and <code>2, 4, 6, ..</code> the sines: <code>sq[1::2] + sq[2::2]</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "frequency_shares", "locked": false, "schema_version": 3, "solution": true}
def frequency_shares(fourier_embedding: Float[Tensor, "p d_model"]) -> Float[Tensor, "n_freqs"]:
    """Share of the total squared norm on each frequency k = 1..(p-1)/2 (its cos and sin rows together)."""
    ### BEGIN SOLUTION
    sq = fourier_embedding.pow(2).sum(-1)
    return (sq[1::2] + sq[2::2]) / sq.sum()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_frequency_shares", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(frequency_shares)

# %% [markdown]
# ## Exercise: the key frequencies
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# A trained model puts almost all of its embedding on a few frequencies (the paper's main run used five:
# 14, 35, 41, 42 and 52; which ones is an accident of the seed). We call a frequency **key** when its share is
# at least a threshold.
#
# Build `key_frequencies(shares, threshold)`: `shares` is `[(p - 1) / 2]` (entry `k - 1` for frequency `k`);
# return the list of frequencies `k` (Python ints, counting from 1) whose share is `>= threshold`, in
# increasing order. It works when shares `[0.1, 0.5, 0.0, 0.3]` with threshold 0.2 give `[2, 4]`.
#
# <details><summary>Hint</summary><code>(shares >= threshold).nonzero()</code> gives 0-based positions; add 1.</details>

# %% nbgrader={"grade": false, "grade_id": "key_frequencies", "locked": false, "schema_version": 3, "solution": true}
def key_frequencies(shares: Float[Tensor, "n_freqs"], threshold: float) -> list[int]:
    """Frequencies k (1-based, increasing) whose share is at least `threshold`."""
    ### BEGIN SOLUTION
    return [int(i) + 1 for i in (shares >= threshold).nonzero().flatten()]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_key_frequencies", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(key_frequencies)

# %% [markdown]
# The shipped model's embedding, frequency by frequency. We call a frequency key when it holds at least
# `KEY_FREQ_THRESHOLD` of the squared norm. You should see between 3 and 7 key frequencies that together hold
# more than 80 % of it (the course's tests check this); the other frequencies share the rest.

# %%
KEY_FREQ_THRESHOLD = 0.05
shares = frequency_shares(embedding_in_fourier_basis(model.W_E, basis))
key_freqs = key_frequencies(shares, KEY_FREQ_THRESHOLD)
print(f"key frequencies: {key_freqs}, holding {shares[[k - 1 for k in key_freqs]].sum():.1%} of the embedding's squared norm")
plots.bar(shares, labels=range(1, p // 2 + 1), title="Share of the embedding's squared norm on each frequency",
          x_title="frequency k", y_title="share")

# %% [markdown]
# The small model you trained in Part 1 had a different `p` and seed, so its key frequencies differ, if it
# has settled on a few yet (it stopped as soon as it generalised, before much clean-up):

# %%
small_shares = frequency_shares(embedding_in_fourier_basis(small["state_dict"]["W_E"], fourier_basis(SMALL_CONFIG["p"])))
print("your small model's five largest shares:",
      {int(k) + 1: round(float(small_shares[k]), 3) for k in small_shares.argsort(descending=True)[:5]})

# %% [markdown]
# ## Exercise: neuron activations
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# The model has 512 MLP neurons. Each one's activation at the `=` position, as a function of the two inputs,
# is a `[p, p]` grid over `(a, b)`. If the model computes with waves, these grids should be periodic.
#
# Build `mlp_activations(model, tokens)`: run the model with `run_with_cache` on `tokens` (`[batch, 3]`) and
# return the MLP's post-ReLU activations at the last position, `[batch, d_mlp]`: TransformerLens's hook
# `"blocks.0.mlp.hook_post"` (also `cache["post", 0]`). It works when it matches a run of the model on a few
# pairs.
#
# <details><summary>Hint 1</summary><code>_, cache = model.run_with_cache(tokens)</code>, then index position <code>-1</code>.</details>
# <details><summary>Hint 2</summary><code>names_filter="blocks.0.mlp.hook_post"</code> keeps only the activation you need.</details>

# %% nbgrader={"grade": false, "grade_id": "mlp_activations", "locked": false, "schema_version": 3, "solution": true}
def mlp_activations(model, tokens: Int[Tensor, "batch 3"]) -> Float[Tensor, "batch d_mlp"]:
    """Post-ReLU MLP activations at the last position ('=') for each input."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_post")
    return cache["blocks.0.mlp.hook_post"][:, -1]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_mlp_activations", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(mlp_activations)

# %% [markdown]
# Four neurons over all `(a, b)`: rows are `a`, columns `b`. Look for patterns that repeat across the grid:
# waves in `a`, in `b`, and along the diagonals, where `a + b` is constant.

# %%
neuron_acts = mlp_activations(model, tokens).reshape(p, p, -1)  # [a, b, neuron]
for n in range(4):
    plots.heatmap(neuron_acts[:, :, n], title=f"neuron {n}: activation over (a, b)", x_title="b", y_title="a",
                  diverging=False).show()

# %% [markdown]
# ## Exercise: a 2D Fourier transform
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# A grid over `(a, b)` is a function of two variables. Rewriting it in the Fourier basis along both axes turns
# "a wave of frequency k in a times a wave in b" into a single coefficient. Row `i`, column `j` of the result
# is the coefficient on `basis[i](a) * basis[j](b)`.
#
# Build `fourier_transform_2d(grid, basis)`: `grid` is `[p, p, ...]` (any number of trailing axes, e.g. one per
# neuron), `basis` is `[p, p]`; return `out[i, j, ...] = sum_{a, b} basis[i, a] basis[j, b] grid[a, b, ...]`, the same
# shape as `grid`. It works when the grid `basis[3](a) * basis[4](b)` gives a single 1 at `[3, 4]`.
#
# <details><summary>Hint 1</summary>For a plain <code>[p, p]</code> grid it is <code>basis @ grid @ basis.T</code>.</details>
# <details><summary>Hint 2</summary>With trailing axes, transform one axis at a time: <code>torch.einsum("ia,ab...->ib...", basis, grid)</code>, then the same along <code>b</code>. (A single three-operand <code>einsum</code> may first build a <code>[p, p, p, p]</code> product of the two bases: 650 MB for <code>p = 113</code>.)</details>

# %% nbgrader={"grade": false, "grade_id": "fourier_transform_2d", "locked": false, "schema_version": 3, "solution": true}
def fourier_transform_2d(grid: Float[Tensor, "p p *rest"], basis: Float[Tensor, "p p"]) -> Float[Tensor, "p p *rest"]:
    """The 2D Fourier transform of a grid over (a, b): basis along a, basis along b, trailing axes untouched."""
    ### BEGIN SOLUTION
    along_a = torch.einsum("ia,ab...->ib...", basis, grid.to(basis.dtype))
    return torch.einsum("jb,ib...->ij...", basis, along_a)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_fourier_transform_2d", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(fourier_transform_2d)

# %% [markdown]
# Neuron 0 in the Fourier basis (absolute values; the top-left corner, up to the largest key frequency). A
# neuron that follows one frequency `k` has its coefficients only in the rows and columns `const`, `cos k`,
# `sin k`: a constant, terms in `a` or `b` alone (the first column and row), and products of a wave in `a` with
# a wave in `b` (which is how `cos(w(a + b))` appears).

# %%
neuron_fourier = fourier_transform_2d(neuron_acts, basis)  # [p, p, d_mlp]
corner = 2 * max(key_freqs) + 1
plots.heatmap(neuron_fourier[:corner, :corner, 0].abs(), x_labels=names[:corner], y_labels=names[:corner],
              title="|2D Fourier coefficients| of neuron 0", x_title="basis vector in b", y_title="basis vector in a",
              diverging=False)

# %% [markdown]
# ## Exercise: how much of a neuron one frequency explains
# > Difficulty 3/5 · Importance 4/5 · ~15 min
#
# The paper measures how much of each neuron's variance a single frequency explains (section 4):
# keep only the 2D Fourier coefficients whose row and column are both among `const`, `cos k`, `sin k`, and
# compare their squared sum with all the coefficients'. The `(const, const)` coefficient is the neuron's mean,
# not variance, so it is left out of both.
#
# Build `neuron_frequency_fractions(fourier_acts)`: `fourier_acts` is `[p, p, n_neurons]` (the 2D transform,
# basis order as in `fourier_basis`); return `[n_neurons, (p - 1) / 2]` whose entry `[n, k - 1]` is
# `(sum of squared coefficients at rows, columns in {0, 2k-1, 2k}, minus the (0, 0) one) / (sum of all squared
# coefficients minus the (0, 0) one)`. You may assume every neuron varies (the denominator is not 0). It works
# when a neuron `cos(w_2 a) + sin(w_2 b)` is explained fully by frequency 2.
#
# <details><summary>Hint 1</summary><code>sq = fourier_acts.pow(2)</code>; <code>total = sq.sum((0, 1)) - sq[0, 0]</code>.</details>
# <details><summary>Hint 2</summary>For each <code>k</code>: <code>idx = [0, 2 * k - 1, 2 * k]</code>, then <code>sq[idx][:, idx].sum((0, 1)) - sq[0, 0]</code>. Stack over <code>k</code> on the last axis.</details>

# %% nbgrader={"grade": false, "grade_id": "neuron_frequency_fractions", "locked": false, "schema_version": 3, "solution": true}
def neuron_frequency_fractions(fourier_acts: Float[Tensor, "p p n_neurons"]) -> Float[Tensor, "n_neurons n_freqs"]:
    """Fraction of each neuron's variance (2D Fourier coefficients except (const, const)) on each frequency."""
    ### BEGIN SOLUTION
    p = fourier_acts.shape[0]
    sq = fourier_acts.pow(2)
    total = sq.sum((0, 1)) - sq[0, 0]
    fractions = []
    for k in range(1, p // 2 + 1):
        idx = [0, 2 * k - 1, 2 * k]
        fractions.append((sq[idx][:, idx].sum((0, 1)) - sq[0, 0]) / total)
    return torch.stack(fractions, dim=-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_neuron_frequency_fractions", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(neuron_frequency_fractions)

# %% [markdown]
# ## Exercise: neuron clusters
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# If most neurons are explained by one frequency, the MLP splits into clusters, one per frequency.
#
# Build `cluster_neurons(fractions, threshold)`: `fractions` is `[n_neurons, (p - 1) / 2]` from the exercise above;
# return an integer tensor `[n_neurons]`: for each neuron the frequency `k` (counting from 1) with the largest
# fraction if that fraction is `>= threshold`, otherwise 0 (no cluster). It works when fractions
# `[[0.1, 0.9], [0.5, 0.4]]` with threshold 0.8 give `[2, 0]`.
#
# <details><summary>Hint</summary><code>best, index = fractions.max(-1)</code>, then <code>torch.where(best >= threshold, index + 1, 0)</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "cluster_neurons", "locked": false, "schema_version": 3, "solution": true}
def cluster_neurons(fractions: Float[Tensor, "n_neurons n_freqs"], threshold: float) -> Int[Tensor, "n_neurons"]:
    """Each neuron's best frequency (1-based) if it explains at least `threshold` of its variance, else 0."""
    ### BEGIN SOLUTION
    best, index = fractions.max(dim=-1)
    return torch.where(best >= threshold, index + 1, torch.zeros_like(index))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_cluster_neurons", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(cluster_neurons)

# %% [markdown]
# The shipped model's neurons, with the paper's 85 % threshold. You should see that more than half of the
# neurons are explained to 85 % by one frequency, and that every cluster's frequency is one of the embedding's
# key frequencies (the course's tests check both on this model).

# %%
NEURON_THRESHOLD = 0.85
fractions = neuron_frequency_fractions(neuron_fourier)
clusters = cluster_neurons(fractions, NEURON_THRESHOLD)
sizes = torch.bincount(clusters, minlength=p // 2 + 1)
print(f"neurons in a cluster: {(clusters > 0).float().mean():.1%}; "
      f"cluster sizes: { {k: int(sizes[k]) for k in sizes.nonzero().flatten().tolist() if k > 0} }; "
      f"key frequencies: {key_freqs}")
plots.bar(sizes[1:], labels=range(1, p // 2 + 1), title=f"Neurons per frequency (fraction >= {NEURON_THRESHOLD})",
          x_title="frequency k", y_title="neurons")

# %% [markdown]
# ## Logits in the Fourier basis
#
# The logits are a function of three numbers: `a`, `b` and the candidate answer `c`. The 2D transform over
# `(a, b)` of one answer's logits shows where they live. For an algorithm built on `cos(w (a + b - c))`, the
# large coefficients should be those on `cos(w a) cos(w b)` and `sin(w a) sin(w b)` (the product terms of
# `cos(w (a + b))`) and on `cos(w a) sin(w b)`, `sin(w a) cos(w b)` (those of `sin(w (a + b))`): the 2 × 2 block
# of `cos k`, `sin k` rows and columns, for each key frequency `k`. You should see that for every answer `c`,
# these blocks hold more than 90 % of the squared coefficients, the mean aside (the course's tests check this).

# %%
logits_grid = logits_all.reshape(p, p, p)  # [a, b, c]
logits_fourier = fourier_transform_2d(logits_grid, basis)
plots.heatmap(logits_fourier[:corner, :corner, 0].abs(), x_labels=names[:corner], y_labels=names[:corner],
              title="|2D Fourier coefficients| of the logit for c = 0", x_title="basis vector in b",
              y_title="basis vector in a", diverging=False).show()
sq = logits_fourier.pow(2)
in_blocks = sum(sq[[2 * k - 1, 2 * k]][:, [2 * k - 1, 2 * k]].sum((0, 1)) for k in key_freqs)
block_share = in_blocks / (sq.sum((0, 1)) - sq[0, 0])
print(f"share of each answer's squared 2D coefficients in the key frequencies' blocks: "
      f"min over c {block_share.min():.1%}, mean {block_share.mean():.1%}")

# %% [markdown]
# ## Exercise: the directions cos(w (a + b − c))
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# The algorithm's last step: the logit for answer `c` is, up to a per-input constant, `sum_k α_k cos(w_k (a + b - c))`.
# By the identity `cos(w(a + b - c)) = cos(w(a + b)) cos(w c) + sin(w(a + b)) sin(w c)`, the unembedding only needs
# `cos(w(a + b))` and `sin(w(a + b))` in the residual stream, and those are products of the embedding's waves.
#
# Build `trig_logit_directions(p, freqs)`: return a float32 `[len(freqs), p, p, p]` tensor whose `[i, a, b, c]`
# entry is `cos(2π k (a + b - c) / p)` for `k = freqs[i]`. It works when it agrees with the product form of the
# identity.
#
# <details><summary>Hint</summary>Broadcast: <code>a = torch.arange(p)[:, None, None]</code>, <code>b = torch.arange(p)[None, :, None]</code>, <code>c = torch.arange(p)[None, None, :]</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "trig_logit_directions", "locked": false, "schema_version": 3, "solution": true}
def trig_logit_directions(p: int, freqs: list[int]) -> Float[Tensor, "n_freqs p p p"]:
    """cos(2 pi k (a + b - c) / p) over all (a, b, c), one [p, p, p] block per frequency k in freqs."""
    ### BEGIN SOLUTION
    x = torch.arange(p, dtype=torch.float64)
    s = x[:, None, None] + x[None, :, None] - x[None, None, :]
    return torch.stack([torch.cos(2 * math.pi * k * s / p) for k in freqs]).float()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_trig_logit_directions", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(trig_logit_directions)

# %% [markdown]
# ## Exercise: how much of the logits the trig terms explain
# > Difficulty 3/5 · Importance 5/5 · ~15 min
#
# Softmax ignores a constant added to all of one input's logits, so first centre them: subtract, for each
# `(a, b)`, the mean over `c`. Then fit the centred logits as a combination of the directions by least
# squares, and ask how much of their variance the fit explains (the paper approximates the logits the same
# way, section 4).
#
# Build `fit_logits(logits, directions)`: `logits` is `[p, p, p]` over `(a, b, c)`, `directions` is
# `[n, p, p, p]`. Working in float64: centre the logits over `c`; find coefficients `coef` (`[n]`) minimising
# `||centred - sum_i coef[i] * directions[i]||²`; return `(coef, explained)` with
# `explained = 1 - ||centred - fit||² / ||centred||²` as a float. It works when logits built as
# `2 * directions[0] - 3 * directions[1] + 5` give coefficients `[2, -3]` and `explained = 1`.
#
# <details><summary>Hint 1</summary>Flatten: <code>X = directions.reshape(n, -1).T</code> is <code>[p³, n]</code>, <code>y = centred.reshape(-1)</code>.</details>
# <details><summary>Hint 2</summary><code>torch.linalg.lstsq(X, y[:, None]).solution</code>. (Directions of different frequencies are orthogonal, so <code>(X * y[:, None]).sum(0) / X.pow(2).sum(0)</code> also works here.)</details>

# %% nbgrader={"grade": false, "grade_id": "fit_logits", "locked": false, "schema_version": 3, "solution": true}
def fit_logits(logits: Float[Tensor, "p p p"], directions: Float[Tensor, "n p p p"]) -> tuple[Float[Tensor, "n"], float]:
    """Least-squares fit of the logits (centred over c) by the directions: (coefficients, fraction of variance explained)."""
    ### BEGIN SOLUTION
    centred = logits.double() - logits.double().mean(dim=-1, keepdim=True)
    X = directions.double().reshape(directions.shape[0], -1).T
    y = centred.reshape(-1)
    coef = torch.linalg.lstsq(X, y[:, None]).solution.flatten()
    residual = y - X @ coef
    return coef, float(1 - residual.pow(2).sum() / y.pow(2).sum())
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_fit_logits", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(fit_logits)

# %% [markdown]
# The fit with the key frequencies. You should see that it explains more than 90 % of the variance of the
# shipped model's centred logits (the course's tests check this), with every coefficient positive: each key
# frequency votes for the right answer.

# %%
coef, explained = fit_logits(logits_grid, trig_logit_directions(p, key_freqs))
print(f"coefficients: { {k: round(float(c), 2) for k, c in zip(key_freqs, coef)} }; variance explained: {explained:.1%}")

# %% [markdown]
# And the unembedding side, read straight from the weights: each neuron writes to the logits through
# `W_out @ W_U` (`[d_mlp, p]`). In the Fourier basis over `c`, the neurons of the cluster for frequency `k` should
# put most (over half) of their output weight on `cos(w_k c)` and `sin(w_k c)`, the last step of the identity
# (the course's tests check this for every key frequency).

# %%
W_L_fourier = (model.W_out[0] @ model.W_U) @ basis.T  # [d_mlp, basis vector over c]
sq = W_L_fourier.pow(2)
for k in key_freqs:
    members = clusters == k
    own = (sq[members][:, [2 * k - 1, 2 * k]].sum() / sq[members].sum()).item()
    print(f"frequency {k:2d}: {int(members.sum()):3d} neurons, {own:.0%} of their output weight on cos/sin({k}·c)")

# %% [markdown]
# ### Recap of Part 2
# - In the Fourier basis, the embedding uses only a few key frequencies.
# - MLP neurons are periodic in `a` and `b`; most are explained by a single frequency, and they cluster by the
#   embedding's key frequencies.
# - The logits are, to a good approximation, `sum_k α_k cos(w_k (a + b - c))`: the model adds `a` and `b` as
#   rotations, via `cos(w(a + b)) = cos(wa) cos(wb) - sin(wa) sin(wb)` and its sine partner, and reads the answer off
#   with `cos(w(a + b - c))`, largest at the right `c`.

# %% [markdown]
# # Part 3 · Progress measures over training
#
# **Learning objectives**
# - Split the logits into the part the Fourier algorithm produces and the rest.
# - Compute the paper's progress measures over 49 checkpoints: restricted loss, excluded loss, and the sum of
#   squared weights, next to the training and test losses.
# - Mark the three phases of training (memorisation, circuit formation, clean-up) from the measures.
#
# The paper's progress measures (section 5) use what Part 2 found. With the key frequencies known:
# - **restricted loss**: keep only the logits' components along `cos(w_k (a + b))` and `sin(w_k (a + b))` for key
#   `k` (plus the mean over inputs), and compute the loss on all pairs. It measures how well the Fourier
#   circuit *alone* would do.
# - **excluded loss**: remove exactly those components and compute the loss on the *training* pairs. It
#   measures how well the model does on its training set *without* the circuit, i.e. by memorisation.
# - **sum of squared weights**: the quantity weight decay shrinks.

# %% [markdown]
# ## Exercise: the directions cos/sin(w (a + b)) over pairs
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Over the `p²` inputs, `cos(w_k (a + b))` and `sin(w_k (a + b))` are vectors. By the identity
# `cos(w(a + b - c)) = cos(w(a + b)) cos(wc) + sin(w(a + b)) sin(wc)`, for each answer `c` the algorithm's logits
# (as a vector over inputs) lie in the span of these vectors.
#
# Build `sum_frequency_directions(p, freqs)`: return a float64 `[2 * len(freqs), p * p]` tensor with rows, in
# order, `cos(w_k s)` and `sin(w_k s)` for each `k` in `freqs`, where `s = a + b` for pair `i = a * p + b`, and each
# row normalised to norm 1. They are orthonormal. It works when `directions @ directions.T` is the identity.
#
# <details><summary>Hint</summary>Your <code>modular_addition_data(p)</code> gives <code>a</code> and <code>b</code> as the first two columns of the tokens.</details>

# %% nbgrader={"grade": false, "grade_id": "sum_frequency_directions", "locked": false, "schema_version": 3, "solution": true}
def sum_frequency_directions(p: int, freqs: list[int]) -> Float[Tensor, "n_dirs pairs"]:
    """Orthonormal rows cos(w_k (a+b)), sin(w_k (a+b)) over all pairs, for each k in freqs (float64)."""
    ### BEGIN SOLUTION
    tokens, _ = modular_addition_data(p)
    s = (tokens[:, 0] + tokens[:, 1]).double()
    rows = []
    for k in freqs:
        rows += [torch.cos(2 * math.pi * k * s / p), torch.sin(2 * math.pi * k * s / p)]
    if not rows:
        return torch.zeros(0, p * p, dtype=torch.float64)
    directions = torch.stack(rows)
    return directions / directions.norm(dim=1, keepdim=True)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_sum_frequency_directions", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(sum_frequency_directions)

# %% [markdown]
# ## Exercise: restricted logits
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# Restricting means projecting: for each answer `c`, the logits over the `p²` inputs are a vector, and we keep
# its projection onto the span of the directions, plus its mean over inputs.
#
# Build `restricted_logits(logits, directions)`: `logits` is `[p * p, p]` (inputs × answers), `directions` is
# `[n, p * p]` with orthonormal rows; working in float64, return `mean + directions.T @ (directions @ logits)`,
# `[p * p, p]`, where `mean` is the logits' mean over inputs (`[1, p]`, broadcast). It works when logits made of
# a mean, a direction and something orthogonal to both lose only the last part.
#
# <details><summary>Hint</summary>The mean is over axis 0 (the inputs), not over the answers.</details>

# %% nbgrader={"grade": false, "grade_id": "restricted_logits", "locked": false, "schema_version": 3, "solution": true}
def restricted_logits(logits: Float[Tensor, "pairs p"], directions: Float[Tensor, "n_dirs pairs"]) -> Float[Tensor, "pairs p"]:
    """The logits' mean over inputs plus their projection onto the directions (float64)."""
    ### BEGIN SOLUTION
    logits, directions = logits.double(), directions.double()
    return logits.mean(dim=0, keepdim=True) + directions.T @ (directions @ logits)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_restricted_logits", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(restricted_logits)

# %% [markdown]
# ## Exercise: excluded logits
# > Difficulty 1/5 · Importance 5/5 · ~5 min
#
# The complement: remove the projection onto the directions and keep everything else (the mean included).
#
# Build `excluded_logits(logits, directions)`: same inputs; return, in float64,
# `logits - directions.T @ (directions @ logits)`. It works when excluding the directions of a logit table built
# from them leaves only what was orthogonal to them.

# %% nbgrader={"grade": false, "grade_id": "excluded_logits", "locked": false, "schema_version": 3, "solution": true}
def excluded_logits(logits: Float[Tensor, "pairs p"], directions: Float[Tensor, "n_dirs pairs"]) -> Float[Tensor, "pairs p"]:
    """The logits with their projection onto the directions removed (float64)."""
    ### BEGIN SOLUTION
    logits, directions = logits.double(), directions.double()
    return logits - directions.T @ (directions @ logits)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_excluded_logits", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(excluded_logits)

# %% [markdown]
# On the final model. You should see a restricted loss below both the training and the test loss: keeping only
# the key frequencies' part of the logits does not hurt, it helps (what it removes still costs the model a little,
# on the training pairs too). And an excluded loss on the training set above `ln p`: without the key frequencies
# the model does worse than a uniform guess on the pairs it was trained on. The course's tests check both.

# %%
directions = sum_frequency_directions(p, key_freqs)
print(f"final model: train loss {cross_entropy_float64(logits_all[train_idx], labels[train_idx]).item():.3g}, "
      f"test loss {cross_entropy_float64(logits_all[test_idx], labels[test_idx]).item():.3g}, "
      f"restricted loss {cross_entropy_float64(restricted_logits(logits_all, directions), labels).item():.3g}, "
      f"excluded loss (train) {cross_entropy_float64(excluded_logits(logits_all, directions)[train_idx], labels[train_idx]).item():.3g}")

# %% [markdown]
# These losses are around `1e-7`: this is where float64 matters (Part 1). The same training loss in float32,
# pair by pair. You should see more than half of the training pairs' float32 losses come out as exactly 0, and
# the float32 mean off from the float64 one by more than 20 % (the course's tests check both).

# %%
right = labels[train_idx, None]
in_float32 = -logits_all[train_idx].float().log_softmax(-1).gather(-1, right)[:, 0]
in_float64 = -logits_all[train_idx].double().log_softmax(-1).gather(-1, right)[:, 0]
print(f"training loss: float64 {in_float64.mean():.4g}, float32 {in_float32.mean():.4g}; training pairs whose "
      f"float32 loss is exactly 0: {(in_float32 == 0).float().mean():.0%} (in float64: {(in_float64 == 0).float().mean():.0%})")

# %% [markdown]
# ## Exercise: the sum of squared weights
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# Weight decay pulls every weight towards zero at each step. The memorised solution needs many large weights;
# the Fourier circuit needs fewer. The paper tracks the total sum of squared weights (section 5).
#
# Build `sum_squared_weights(state)`: `state` is a state dict (name → tensor); return, as a Python float, the sum
# over all its floating-point tensors of the sum of their squared entries (in float64). It works when
# `{"w": [[1, 2]], "b": [3]}` gives 14.
#
# <details><summary>Hint</summary>Skip tensors that are not floating point (<code>t.is_floating_point()</code>); there are none in this model, but a state dict may hold integer buffers.</details>

# %% nbgrader={"grade": false, "grade_id": "sum_squared_weights", "locked": false, "schema_version": 3, "solution": true}
def sum_squared_weights(state: dict[str, Tensor]) -> float:
    """Sum of the squares of every entry of every floating-point tensor in a state dict."""
    ### BEGIN SOLUTION
    return float(sum(t.double().pow(2).sum() for t in state.values() if t.is_floating_point()))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_sum_squared_weights", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(sum_squared_weights)

# %% [markdown]
# ## Exercise: progress measures over checkpoints
# > Difficulty 3/5 · Importance 5/5 · ~20 min
#
# Now every measure, at every checkpoint. The shipped run saved 49 checkpoints, in float16 to keep them small
# (`load_checkpoint_series` returns their epochs and state dicts, converted to float32, with TransformerLens's names
# such as `"embed.weight"`). Rounding the weights to float16 moves the losses a little: recomputed from the
# checkpoints, the training and test losses agree with those logged during training to within 5 %. Evaluating each on all
# `p²` inputs is cheap with the fast model: `FastModAddModel(p).load_bridge_state_dict(state)` loads one.
#
# Build `progress_measures(states, p, frac_train, seed, key_freqs)`: for each state dict, compute the logits on
# all `p²` pairs (your dataset order) and return a dict of lists (Python floats, one per state):
# - `"train_loss"`, `"test_loss"`, `"test_acc"`: on the split `split_indices(p, frac_train, seed)`;
# - `"restricted_loss"`: your `cross_entropy_float64` of the restricted logits (directions from your
#   `sum_frequency_directions(p, key_freqs)`) on **all** pairs;
# - `"excluded_loss"`: of the excluded logits on the **training** pairs;
# - `"sum_sq_weights"`: your `sum_squared_weights` of the state dict.
#
# It works when the training and test losses agree with the ones logged during training (to within the 5 % that
# float16 checkpoints allow).
#
# <details><summary>Hint 1</summary>Build the model, the data, the split and the directions once, before the loop over states.</details>
# <details><summary>Hint 2</summary><code>model(tokens[:, 0], tokens[:, 1])</code> gives <code>[p*p, p]</code> logits; wrap the loop in <code>torch.no_grad()</code> and <code>tqdm</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "progress_measures", "locked": false, "schema_version": 3, "solution": true}
def progress_measures(states: list[dict[str, Tensor]], p: int, frac_train: float, seed: int,
                      key_freqs: list[int]) -> dict[str, list[float]]:
    """Train/test loss, test accuracy, restricted loss (all pairs), excluded loss (train) and sum of squared
    weights of each checkpoint."""
    ### BEGIN SOLUTION
    tokens, labels = modular_addition_data(p)
    train_idx, test_idx = split_indices(p, frac_train, seed)
    directions = sum_frequency_directions(p, key_freqs)
    model = FastModAddModel(p)
    names = ("train_loss", "test_loss", "test_acc", "restricted_loss", "excluded_loss", "sum_sq_weights")
    out = {name: [] for name in names}
    with torch.no_grad():
        for state in tqdm(states, desc="checkpoints", mininterval=1.0):
            model.load_bridge_state_dict(state)
            logits = model(tokens[:, 0], tokens[:, 1])
            out["train_loss"].append(cross_entropy_float64(logits[train_idx], labels[train_idx]).item())
            out["test_loss"].append(cross_entropy_float64(logits[test_idx], labels[test_idx]).item())
            out["test_acc"].append((logits[test_idx].argmax(-1) == labels[test_idx]).float().mean().item())
            out["restricted_loss"].append(cross_entropy_float64(restricted_logits(logits, directions), labels).item())
            excluded = excluded_logits(logits, directions)
            out["excluded_loss"].append(cross_entropy_float64(excluded[train_idx], labels[train_idx]).item())
            out["sum_sq_weights"].append(sum_squared_weights(state))
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_progress_measures", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(progress_measures)

# %%
epochs, states = micourse.models.load_checkpoint_series("grokking_p113")
measures = progress_measures(states, p, run["frac_train"], run["split_seed"], key_freqs)
key_share = [float(frequency_shares(embedding_in_fourier_basis(s["embed.weight"], basis))[[k - 1 for k in key_freqs]].sum())
             for s in states]
first_restricted = next(e for e, r in zip(epochs, measures["restricted_loss"]) if r < 1)
first_test = next(e for e, t in zip(epochs, measures["test_loss"]) if t < 1)
print(f"{len(epochs)} checkpoints, epochs {epochs[0]}..{epochs[-1]}")
print(f"restricted loss first under 1 at epoch {first_restricted}; test loss first under 1 at epoch {first_test}")
print(f"final excluded loss (train) {measures['excluded_loss'][-1]:.3g} vs training loss {measures['train_loss'][-1]:.3g}")

# %% [markdown]
# You should see the restricted loss fall under 1 at an earlier checkpoint than the test loss does, and the
# final excluded loss on the training set far above (more than 10 times) the training loss (the course's tests
# check both on this run).
#
# ## Exercise: the three phases
# > Difficulty 2/5 · Importance 4/5 · ~15 min
#
# The paper splits training into three phases (section 5): **memorisation** (the training loss falls, the test
# loss rises), **circuit formation** (the Fourier circuit grows: restricted loss falls and excluded loss rises,
# while the model as a whole still does worse than a uniform guess on the test set) and **clean-up** (weight decay removes the memorised components: the test loss
# collapses and the weight norm falls fast). For their main run they give memorisation over epochs 0 to 1.4k,
# circuit formation 1.4k to 9.4k and clean-up 9.4k to 14k. The phases blend into each other; to mark them on a
# plot we use simple rules on the measures themselves:
# 1. memorisation ends at the checkpoint where the **test loss peaks**;
# 2. circuit formation ends (clean-up begins) at the first *later* checkpoint where the test loss is **below
#    `ln p`**, the loss of a uniform guess: the generalising circuit now outweighs memorisation on unseen pairs;
# 3. clean-up ends at the first checkpoint at or after that where the **sum of squared weights** is within
#    `tolerance` of its final value: `sum_sq_weights[i] <= (1 + tolerance) * sum_sq_weights[-1]`.
#
# Build `phase_boundaries(epochs, test_loss, sum_sq_weights, p, tolerance)`: three lists of equal length (epochs
# increasing); return the three epochs `(memorisation_end, circuit_formation_end, cleanup_end)` as ints, by the
# rules above. If no checkpoint satisfies rule 2 or 3, use the last epoch for it (and for the rules after it).
# It works when made-up curves give the boundaries you can read off by eye.
#
# <details><summary>Hint 1</summary>The peak's index <code>i</code> is <code>max(range(n), key=lambda j: test_loss[j])</code> (or <code>torch.tensor(test_loss).argmax()</code>).</details>
# <details><summary>Hint 2</summary>Rule 2 looks only after the peak: early in training the test loss can be below <code>ln p</code> too.</details>

# %% nbgrader={"grade": false, "grade_id": "phase_boundaries", "locked": false, "schema_version": 3, "solution": true}
def phase_boundaries(epochs: list[int], test_loss: list[float], sum_sq_weights: list[float], p: int,
                     tolerance: float = 0.05) -> tuple[int, int, int]:
    """(end of memorisation, end of circuit formation, end of clean-up), as epochs, by the rules above."""
    ### BEGIN SOLUTION
    n = len(epochs)
    peak = max(range(n), key=lambda j: test_loss[j])
    below = next((j for j in range(peak + 1, n) if test_loss[j] < math.log(p)), n - 1)
    settled = next((j for j in range(below, n) if sum_sq_weights[j] <= (1 + tolerance) * sum_sq_weights[-1]), n - 1)
    return int(epochs[peak]), int(epochs[below]), int(epochs[settled])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_phase_boundaries", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(phase_boundaries)

# %% [markdown]
# The progress measures of the shipped run, with the three phases shaded (by your `phase_boundaries`).

# %%
mem_end, circuit_end, cleanup_end = phase_boundaries(epochs, measures["test_loss"], measures["sum_sq_weights"], p)
print(f"memorisation 0-{mem_end}, circuit formation {mem_end}-{circuit_end}, clean-up {circuit_end}-{cleanup_end} "
      f"(the paper's run: 0-1.4k, 1.4k-9.4k, 9.4k-14k)")
PHASES = [(0, "memorisation", "#1f77b4"), (1, "circuit formation", "#ff7f0e"), (2, "clean-up", "#2ca02c")]


def shade_phases(fig: go.Figure, bounds: list[int]) -> go.Figure:
    """Shade [0, b0], [b0, b1], [b1, b2] and label them."""
    edges = [0, *bounds]
    for i, name, colour in PHASES:
        fig.add_vrect(x0=edges[i], x1=edges[i + 1], fillcolor=colour, opacity=0.12, line_width=0,
                      annotation_text=name, annotation_position="top left")
    return fig


loss_names = ["train_loss", "test_loss", "restricted_loss", "excluded_loss"]
fig = plots.lines(torch.tensor([measures[n] for n in loss_names]), x=epochs, names=loss_names, log_y=True,
                  title="Progress measures of the shipped run", x_title="epoch", y_title="cross-entropy")
shade_phases(fig, [mem_end, circuit_end, cleanup_end]).show()
fig = plots.lines(torch.tensor([measures["sum_sq_weights"]]), x=epochs, names=["sum of squared weights"],
                  title="Sum of squared weights", x_title="epoch", y_title="sum of squares")
shade_phases(fig, [mem_end, circuit_end, cleanup_end]).show()
fig = plots.lines(torch.tensor([key_share, measures["test_acc"]]), x=epochs,
                  names=["key frequencies' share of the embedding", "test accuracy"],
                  title="The embedding concentrates on the key frequencies", x_title="epoch", y_title="fraction")
shade_phases(fig, [mem_end, circuit_end, cleanup_end]).show()

# %% [markdown]
# How to read the plots, phase by phase (the course's tests check each "falls", "rises" and "jumps" below on
# this run, between the boundaries your function found):
# - **Memorisation.** The training loss drops by orders of magnitude while the test loss climbs above `ln p`.
#   The excluded loss falls with the training loss: the model fits its training set without the Fourier
#   components. The sum of squared weights rises steeply in the first few hundred epochs (memorising takes large
#   weights), then stays near its peak (within 15 %) until memorisation ends.
# - **Circuit formation.** The training loss is tiny. The test loss falls at every checkpoint (to well under half
#   its peak) but stays above `ln p` until the phase's last checkpoint (the first below it, which is how Part 3's rule
#   ends the phase): on unseen pairs the model is still worse than a uniform guess. Meanwhile the
#   restricted loss falls (the Fourier circuit alone gets better) and the excluded loss *rises* (the training set
#   depends more and more on the key frequencies). Nothing on the training loss shows this.
# - **Clean-up.** The test loss collapses and test accuracy jumps to nearly 1: that is the grokking seen from
#   outside. The sum of squared weights, falling at every checkpoint since the end of memorisation, falls faster
#   (relative to its size, per epoch) than during circuit formation: weight decay removes the memorised components
#   the circuit no longer needs.
# - **After clean-up.** The test loss keeps falling for a while, reaches its minimum, and then creeps up again
#   slowly (it stays below twice its minimum) while the training loss still falls: the end of the run is not a
#   perfect resting point.
# - In the third plot, the key frequencies' share of the embedding grows from a few percent at initialisation.
#
# Compare the restricted loss with the test loss: the circuit could already solve the task (restricted loss
# under 1) thousands of epochs before the model as a whole did. The model was carrying its memorised solution
# on top. Compare the boundaries with the paper's (about 1.4k, 9.4k and 14k epochs): ours come from rules of our own,
# applied to another seed with other key frequencies, so only the order of events is expected to carry over, not
# the epochs.
#
# ### Recap of Part 3
# - Restricted loss: the key-frequency part of the logits alone. It falls early, long before the test loss.
# - Excluded loss: the logits without it, on the training set. It rises while the circuit forms, and the
#   trained model cannot fit its own training set without the circuit.
# - The sum of squared weights rises steeply at first and stays near its peak while the model memorises, then
#   falls at every checkpoint, fastest (relative to its size) in clean-up.
# - Grokking is the visible end of a gradual process: a circuit forms slowly, then weight decay cleans away
#   the memorisation that hid it (Nanda et al. 2023, section 5).
