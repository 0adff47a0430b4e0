# %% [markdown]
# # Chapter 6 · Attribution patching
#
# Activation patching (chapter 3) answers "does this activation matter?" with one forward pass per activation
# patched. That is fine for 8 heads; it is not for every head at every position of a large model, or for every MLP
# neuron. **Attribution patching** (Nanda 2023, *Attribution Patching: Activation Patching At Industrial Scale*,
# <https://www.neelnanda.io/mechanistic-interpretability/attribution-patching>) replaces all those passes by a
# first-order Taylor expansion: with a metric `M` and an activation `a`,
#
# $$M(a_{\text{source}}) - M(a_{\text{base}}) \;\approx\; (a_{\text{source}} - a_{\text{base}}) \cdot
# \frac{\partial M}{\partial a}\Big|_{a_{\text{base}}},$$
#
# where the **base** run is the one we patch *into* and the **source** run the one we patch *from*. One forward
# pass on each input and one backward pass on the base input give the estimate for every activation at once.
# Kramár et al. (2024, *AtP\*: An efficient and scalable method for localizing LLM behaviour to components*,
# <https://arxiv.org/abs/2403.00745>) study where this approximation fails and propose two fixes, which you will
# build: recomputing the attention softmax exactly when a query or key is patched, and "GradDrop" against effects
# that cancel.
#
# - **Part 1 · The linear approximation** on a toy function, where you can see it work and fail.
# - **Part 2 · Metrics and gradients:** one forward and backward pass that stores every activation and its gradient.
# - **Part 3 · Attribution patching of IOI:** residual stream, head outputs, attention patterns, MLP neurons,
#   beside exact activation patching of the same components.
# - **Part 4 · A task with a known answer:** induction on repeated random tokens, where attribution must find the
#   heads of chapter 2.
# - **Part 5 · Where it breaks:** the AtP* fixes, and how much each recovers.
# - **Part 6 · Speed:** all heads at all positions, exact against attribution, timed.
#
# **Which models.** Parts 2, 3, 5 and 6 use GPT-2 small when the model hub can be reached and otherwise (in CI, in
# tests, offline, or with `MICOURSE_OFFLINE=1`) the course's `ioi_gpt2_2l`, exactly as chapter 3 does; Part 4 uses
# the shipped `attn_only_2l` of chapter 2. The first cell prints which model you got. Sentences that begin "If you
# are on the offline model" describe the shipped models, and the course's tests check them there; the offline IOI
# model's circuit is its own (chapter 3): one layer-1 head attends from END to S2 and writes minus the name it
# reads there, and the last MLP turns that into the answer.
#
# Every exercise has a visible check (`check(fn)`); graders run more.

# %%
import time

import torch
from jaxtyping import Float, Int
from torch import Tensor

import micourse.models
import micourse.plots as plots
from micourse import ioi
from micourse.checks import check

# %%
model = micourse.models.load_model("gpt2", offline_alternative="ioi_gpt2_2l")
cfg = model.cfg
using_gpt2 = getattr(model, "course_name", "") in ("gpt2", "gpt2-small")
print(f"n_layers={cfg.n_layers}, n_heads={cfg.n_heads}, d_model={cfg.d_model}, d_head={cfg.d_head}, d_mlp={cfg.d_mlp}")
print("You are on", "GPT-2 small." if using_gpt2 else "the offline model ioi_gpt2_2l: its circuit is its own.")

# %% [markdown]
# # Part 1 · The linear approximation
#
# **Learning objectives**
# - Compare the exact effect of replacing an input, `f(b) - f(a)`, with its first-order estimate `(b - a) · ∇f(a)`.
# - See the estimate fail where `f` curves: large steps and saturated nonlinearities.
#
# Our toy function is a one-hidden-layer network with a sigmoid, `f(x) = sigmoid(x W) · u`, for a batch of
# inputs `x` `[batch, d_in]`, `W` `[d_in, d_hidden]` and `u` `[d_hidden]`. A sigmoid is flat far from 0, like an
# attention softmax that puts all its weight on one key: there the gradient is small even when moving the input
# would change the output a lot.

# %% [markdown]
# ## Exercise: the toy function
# > Difficulty 1/5 · Importance 2/5 · ~5 min
#
# Build `toy_network(x, W, u)`: return `[batch]`, `sigmoid(x W) · u` for every row of `x`. It works when an input
# of zeros gives `u.sum() / 2` (the sigmoid of 0 is 1/2).
#
# <details><summary>Hint</summary><code>torch.sigmoid</code>, then a matrix product with <code>u</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "toy_network", "locked": false, "schema_version": 3, "solution": true}
def toy_network(x: Float[Tensor, "batch d_in"], W: Float[Tensor, "d_in d_hidden"],
                u: Float[Tensor, "d_hidden"]) -> Float[Tensor, "batch"]:
    """sigmoid(x @ W) @ u for every row of x."""
    ### BEGIN SOLUTION
    return torch.sigmoid(x @ W) @ u
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_toy_network", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(toy_network)

# %% [markdown]
# ## Exercise: its gradient, by autograd
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Attribution patching needs `∂M/∂a`, which autograd gives for every activation at once. Build
# `toy_gradient(x, W, u)`: return `[batch, d_in]`, the gradient of `toy_network(x, W, u)` with respect to each row
# of `x` (row `b` of the result is `∂f(x_b)/∂x_b`). Do not modify `x`, and make it work even where the caller has
# turned gradients off. It works when it matches a finite difference.
#
# <details><summary>Hint 1</summary>Rows don't interact, so the gradient of <code>f(x).sum()</code> with respect to <code>x</code> has row <code>b</code> equal to the gradient of <code>f(x_b)</code>.</details>
# <details><summary>Hint 2</summary>Inside <code>with torch.enable_grad():</code>, take <code>x = x.detach().clone().requires_grad_(True)</code>, then <code>torch.autograd.grad(out.sum(), x)[0]</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "toy_gradient", "locked": false, "schema_version": 3, "solution": true}
def toy_gradient(x: Float[Tensor, "batch d_in"], W: Float[Tensor, "d_in d_hidden"],
                 u: Float[Tensor, "d_hidden"]) -> Float[Tensor, "batch d_in"]:
    """Row b: the gradient of toy_network at x[b] with respect to x[b]."""
    ### BEGIN SOLUTION
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        out = toy_network(x, W, u)
        return torch.autograd.grad(out.sum(), x)[0]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_toy_gradient", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(toy_gradient)

# %% [markdown]
# ## Exercise: the first-order estimate
# > Difficulty 1/5 · Importance 5/5 · ~5 min
#
# Build `linear_estimate(a, b, grad_a)`: all three `[batch, d]`; return `[batch]`, the estimate
# `(b - a) · grad_a` of `f(b) - f(a)` for every row. This one line is attribution patching; the rest of the
# chapter applies it to activations inside a transformer. It works when `b = a` gives 0 and the estimate is exact
# for a linear function.
#
# <details><summary>Hint</summary>Multiply elementwise and sum over the last axis.</details>

# %% nbgrader={"grade": false, "grade_id": "linear_estimate", "locked": false, "schema_version": 3, "solution": true}
def linear_estimate(a: Float[Tensor, "batch d"], b: Float[Tensor, "batch d"],
                    grad_a: Float[Tensor, "batch d"]) -> Float[Tensor, "batch"]:
    """(b - a) . grad_a for every row: the first-order estimate of f(b) - f(a)."""
    ### BEGIN SOLUTION
    return ((b - a) * grad_a).sum(-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_linear_estimate", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(linear_estimate)

# %% [markdown]
# ## Exercise: how wrong is an estimate?
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# We will compare many estimates with exact effects. One summary: the **relative error**
# `sum |estimate - exact| / sum |exact|` over all entries, 0 for a perfect estimate and 1 for an estimate of all
# zeros. Build `relative_error(estimate, exact)`: tensors of the same shape; return a float. It works when an
# estimate of zeros gives 1.
#
# <details><summary>Hint</summary><code>(estimate - exact).abs().sum() / exact.abs().sum()</code>, as a Python float.</details>

# %% nbgrader={"grade": false, "grade_id": "relative_error", "locked": false, "schema_version": 3, "solution": true}
def relative_error(estimate: Float[Tensor, "..."], exact: Float[Tensor, "..."]) -> float:
    """sum |estimate - exact| / sum |exact| over all entries."""
    ### BEGIN SOLUTION
    return ((estimate - exact).abs().sum() / exact.abs().sum()).item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_relative_error", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(relative_error)

# %% [markdown]
# Now the experiment. We take random `a` and `b` and scale `W` up: a larger `W` pushes the hidden units into the
# flat ends of the sigmoid (saturation). You should see the relative error of the estimate grow with the scale of
# `W`, and, for a fixed `W`, grow with the size of the step from `a` to `b`.

# %%
def toy_errors(scales, step=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    W0, u = torch.randn(8, 16, generator=gen) / 8 ** 0.5, torch.randn(16, generator=gen)
    a = torch.randn(256, 8, generator=gen)
    b = a + step * torch.randn(256, 8, generator=gen)
    errors = []
    for scale in scales:
        W = scale * W0
        exact = toy_network(b, W, u) - toy_network(a, W, u)
        errors.append(relative_error(linear_estimate(a, b, toy_gradient(a, W, u)), exact))
    return errors


W_SCALES = [0.1, 0.3, 1.0, 3.0, 10.0]
STEPS = [0.1, 0.3, 1.0, 3.0]
err_by_scale = toy_errors(W_SCALES)
err_by_step = [toy_errors([1.0], step=s)[0] for s in STEPS]
print("relative error by scale of W:", [f"{e:.3f}" for e in err_by_scale])
print("relative error by step size: ", [f"{e:.3f}" for e in err_by_step])
plots.lines(torch.tensor([err_by_scale]), x=W_SCALES, names=["step 1"], title="First-order estimate on the toy network",
            x_title="scale of W (larger = more saturated)", y_title="relative error")

# %% [markdown]
# ### Recap of Part 1
# - The first-order estimate `(b - a) · ∇f(a)` is exact for linear functions and good for small steps.
# - Where `f` is flat at `a` but not between `a` and `b` (a saturated sigmoid or softmax), the gradient at `a`
#   misses what happens on the way, and the estimate fails.

# %% [markdown]
# # Part 2 · Metrics and their gradients
#
# **Learning objectives**
# - Write the IOI metrics of chapter 3 so that they can be differentiated.
# - Store every activation you want and the gradient of the metric with respect to it, in one forward and one
#   backward pass, with hooks.
#
# The task is chapter 3's: on "When Mary and John went to the store, John gave a drink to", the logit difference
# `logit(IO) - logit(S)` at END. The **clean** prompts are the IOI prompts; the **corrupted** ones have the name at
# S2 flipped to IO, which flips the answer. The data come from `micourse.ioi` (see chapter 3); all prompts of one
# template, so every position means the same word in every prompt. On GPT-2 small we take 2 prompts instead of 8:
# the exact sweeps of Parts 3 and 5 run one forward pass per head and position, 2304 of them per sweep, which takes
# minutes on a CPU (Part 6 is about exactly that).

# %%
n_prompts = 2 if using_gpt2 else 8  # GPT-2 small on a CPU: exact sweeps over 12 x 12 heads x 16 positions are slow
data = ioi.make_ioi_data(n_prompts, seed=0, templates=[0])
clean_tokens = data.tokens
corrupted_tokens = clean_tokens.clone()
corrupted_tokens[torch.arange(n_prompts), data.word_idx["S2"]] = data.io_ids
answer_ids, end_pos = data.answer_ids, data.word_idx["end"]
print(model.to_string(clean_tokens[0]), "|", model.to_string(corrupted_tokens[0]))
pos_labels = [f"{i}: {t}" for i, t in enumerate(model.to_str_tokens(clean_tokens[0]))]

# %% [markdown]
# ## Exercise: the mean logit difference, as one number
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# A backward pass needs one scalar. Build `mean_logit_diff(logits, answer_ids, end_pos)`: `logits`
# `[batch, pos, d_vocab]`, `answer_ids` `[batch, 2]` (correct, incorrect), `end_pos` `[batch]`; return a 0-d tensor,
# the mean over prompts of `logits[b, end_pos[b], correct] - logits[b, end_pos[b], incorrect]`. Keep it a tensor
# operation so that gradients flow through it. It works when it is positive on the clean prompts.
#
# <details><summary>Hint</summary><code>logits[torch.arange(batch), end_pos]</code> is <code>[batch, d_vocab]</code>; <code>.gather(1, answer_ids)</code> picks the two answers.</details>

# %% nbgrader={"grade": false, "grade_id": "mean_logit_diff", "locked": false, "schema_version": 3, "solution": true}
def mean_logit_diff(logits: Float[Tensor, "batch pos d_vocab"], answer_ids: Int[Tensor, "batch 2"],
                    end_pos: Int[Tensor, "batch"]) -> Float[Tensor, ""]:
    """Mean over prompts of logit(correct) - logit(incorrect) at END, as a 0-d tensor."""
    ### BEGIN SOLUTION
    end_logits = logits[torch.arange(logits.shape[0]), end_pos]
    answers = end_logits.gather(1, answer_ids)
    return (answers[:, 0] - answers[:, 1]).mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_mean_logit_diff", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(mean_logit_diff)

# %% [markdown]
# ## Exercise: the normalised metric
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# As in chapter 3, `(LD - corrupted LD) / (clean LD - corrupted LD)`: 0 on the corrupted prompts, 1 on the clean
# ones. Its gradient is the logit difference's divided by a constant. Build `normalised_metric(ld, clean_ld,
# corrupted_ld)`; tensors that broadcast; same shape as `ld`. It works when clean and corrupted map to 1 and 0.
#
# <details><summary>Hint</summary>One line of tensor arithmetic.</details>

# %% nbgrader={"grade": false, "grade_id": "normalised_metric", "locked": false, "schema_version": 3, "solution": true}
def normalised_metric(ld: Float[Tensor, "..."], clean_ld: Float[Tensor, ""],
                      corrupted_ld: Float[Tensor, ""]) -> Float[Tensor, "..."]:
    """(ld - corrupted_ld) / (clean_ld - corrupted_ld)."""
    ### BEGIN SOLUTION
    return (ld - corrupted_ld) / (clean_ld - corrupted_ld)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_normalised_metric", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(normalised_metric)

# %%
with torch.no_grad():
    clean_ld = mean_logit_diff(model(clean_tokens), answer_ids, end_pos)
    corrupted_ld = mean_logit_diff(model(corrupted_tokens), answer_ids, end_pos)
print(f"mean logit difference: clean {clean_ld:.2f}, corrupted {corrupted_ld:.2f}")

# %% [markdown]
# ## Exercise: every activation and its gradient, in one pass
# > Difficulty 3/5 · Importance 5/5 · ~20 min
#
# TransformerLens hooks run on the forward pass (`fwd_hooks`) and on the backward pass (`bwd_hooks`): a backward
# hook on a hook point receives the gradient of whatever you call `.backward()` on with respect to that hook
# point's activation. Add both inside `with model.hooks(fwd_hooks=..., bwd_hooks=...):`, run the model, compute the
# metric, and call `.backward()` *inside* the `with` block (the hooks are removed when it ends).
#
# Build `acts_and_grads(model, tokens, answer_ids, end_pos, clean_ld, corrupted_ld, names)`: `names` is a list of
# hook names (`"blocks.0.attn.hook_z"`, ...). Run `tokens`, compute `normalised_metric(mean_logit_diff(...),
# clean_ld, corrupted_ld)`, backpropagate it once, and return `(value, acts, grads)`: the metric as a float, and two
# dicts from each name in `names` to its activation and to the gradient of the metric with respect to it (both
# detached, shaped like the activation). It works when the activations match `model.run_with_cache` and the
# gradients match a finite difference.
#
# Two traps, both verified on TransformerLens 4.3. A forward hook that only saves must still **return the
# activation** (on the bridge, a hook on `hook_z` that returns `None` cuts the gradient of everything before it).
# And key the dicts by the names you asked for, not by `hook.name`: `blocks.0.hook_resid_pre` is an alias, and its
# hook point calls itself `blocks.0.hook_in`.
#
# <details><summary>Hint 1</summary>Make one forward and one backward hook per name, with the name bound as a default argument: <code>def save_act(act, hook, name=name): acts[name] = act.detach().clone(); return act</code>.</details>
# <details><summary>Hint 2</summary>Turn gradients on with <code>torch.enable_grad()</code> (a caller may have turned them off); the model's weights need no gradient of their own.</details>

# %% nbgrader={"grade": false, "grade_id": "acts_and_grads", "locked": false, "schema_version": 3, "solution": true}
def acts_and_grads(model, tokens: Int[Tensor, "batch pos"], answer_ids: Int[Tensor, "batch 2"],
                   end_pos: Int[Tensor, "batch"], clean_ld: Float[Tensor, ""], corrupted_ld: Float[Tensor, ""],
                   names: list[str]) -> tuple[float, dict, dict]:
    """(normalised metric, {name: activation}, {name: d metric / d activation}) from one forward + backward pass."""
    ### BEGIN SOLUTION
    acts, grads = {}, {}
    fwd_hooks, bwd_hooks = [], []
    for name in names:
        def save_act(act, hook, name=name):
            acts[name] = act.detach().clone()
            return act

        def save_grad(grad, hook, name=name):
            grads[name] = grad.detach().clone()

        fwd_hooks.append((name, save_act))
        bwd_hooks.append((name, save_grad))
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd_hooks, bwd_hooks=bwd_hooks):
        value = normalised_metric(mean_logit_diff(model(tokens), answer_ids, end_pos), clean_ld, corrupted_ld)
        value.backward()
    model.zero_grad(set_to_none=True)
    return value.item(), acts, grads
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_acts_and_grads", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(acts_and_grads)

# %% [markdown]
# The three passes of attribution patching: a forward pass on the clean prompts (activations only; our function
# also runs a backward pass there, which we don't use), and a forward and backward pass on the corrupted prompts.
# Patching clean activations into the corrupted run ("denoising", as in chapter 3) makes the corrupted run the
# base: the gradient is taken there.

# %%
act_names = [f"blocks.{layer}.{hook}" for layer in range(cfg.n_layers)
         for hook in ("hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_z", "attn.hook_pattern", "mlp.hook_post")]
clean_value, clean_acts, _ = acts_and_grads(model, clean_tokens, answer_ids, end_pos, clean_ld, corrupted_ld, act_names)
corrupted_value, corrupted_acts, corrupted_grads = acts_and_grads(model, corrupted_tokens, answer_ids, end_pos, clean_ld,
                                                                  corrupted_ld, act_names)
print(f"normalised metric: clean {clean_value:.2f}, corrupted {corrupted_value:.2f}")
print({name: tuple(grad.shape) for name, grad in list(corrupted_grads.items())[:6]})

# %% [markdown]
# # Part 3 · Attribution patching of IOI
#
# **Learning objectives**
# - Turn stored activations and gradients into attribution scores for the residual stream, head outputs, attention
#   patterns and MLP neurons.
# - Compute the exact activation patching of the same components, and compare: heatmaps, a scatter plot, a
#   correlation.
#
# Every attribution function below takes `base`, `source` and `grads` (dicts as returned by `acts_and_grads`: the
# base run's activations, the source run's activations, and the gradients of the base run) and sums
# `(source - base) * grad` over the axes that the patch covers. Patching all prompts at once changes the *mean*
# metric by the sum of the prompts' changes, and the gradient of a mean already carries the `1 / batch`: so **sum**
# over the batch axis too.

# %% [markdown]
# ## Exercise: attribution of the residual stream
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Build `attr_resid(base, source, grads, n_layers)`: for `blocks.{layer}.hook_resid_pre`
# (`[batch, pos, d_model]`), return `[n_layers, pos]`: the estimated effect of patching the source residual stream
# at one position, before one layer. It works when it mirrors chapter 3's residual patching: before layer 0, only
# the S2 position differs, so only there can the estimate be nonzero.
#
# <details><summary>Hint</summary>Sum <code>(source[name] - base[name]) * grads[name]</code> over the batch and <code>d_model</code> axes, then stack the layers.</details>

# %% nbgrader={"grade": false, "grade_id": "attr_resid", "locked": false, "schema_version": 3, "solution": true}
def attr_resid(base: dict, source: dict, grads: dict, n_layers: int) -> Float[Tensor, "n_layers pos"]:
    """Attribution of resid_pre at each (layer, position)."""
    ### BEGIN SOLUTION
    out = []
    for layer in range(n_layers):
        name = f"blocks.{layer}.hook_resid_pre"
        out.append(((source[name] - base[name]) * grads[name]).sum(dim=(0, 2)))
    return torch.stack(out)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_attr_resid", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(attr_resid)

# %% [markdown]
# ## Exercise: attribution of each head at each position
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# Build `attr_heads_by_pos(base, source, grads, n_layers, act="z")`: `act` is one of `"z"`, `"q"`, `"k"`, `"v"`;
# for `blocks.{layer}.attn.hook_{act}` (`[batch, pos, n_heads, d_head]`) return `[n_layers, pos, n_heads]`. With
# `"z"` it estimates patching one head's output at one position (a head's output is `z @ W_O`, so patching `z`
# patches the output). It works when one head's `z` changed at one position lights up that cell only.
#
# <details><summary>Hint</summary>Sum over the batch and <code>d_head</code> axes.</details>

# %% nbgrader={"grade": false, "grade_id": "attr_heads_by_pos", "locked": false, "schema_version": 3, "solution": true}
def attr_heads_by_pos(base: dict, source: dict, grads: dict, n_layers: int,
                      act: str = "z") -> Float[Tensor, "n_layers pos n_heads"]:
    """Attribution of one head's hook_{act} at one position, for every layer, position and head."""
    ### BEGIN SOLUTION
    out = []
    for layer in range(n_layers):
        name = f"blocks.{layer}.attn.hook_{act}"
        out.append(((source[name] - base[name]) * grads[name]).sum(dim=(0, 3)))
    return torch.stack(out)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_attr_heads_by_pos", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(attr_heads_by_pos)

# %% [markdown]
# ## Exercise: attribution of attention patterns
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Build `attr_patterns(base, source, grads, n_layers)`: for `blocks.{layer}.attn.hook_pattern`
# (`[batch, n_heads, q_pos, k_pos]`: the head axis is second here) return `[n_layers, n_heads]`, the estimated
# effect of patching a head's whole attention pattern. It works when it matches a hand-made example.
#
# <details><summary>Hint</summary>Sum over the batch and both position axes: <code>dim=(0, 2, 3)</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "attr_patterns", "locked": false, "schema_version": 3, "solution": true}
def attr_patterns(base: dict, source: dict, grads: dict, n_layers: int) -> Float[Tensor, "n_layers n_heads"]:
    """Attribution of each head's whole attention pattern."""
    ### BEGIN SOLUTION
    out = []
    for layer in range(n_layers):
        name = f"blocks.{layer}.attn.hook_pattern"
        out.append(((source[name] - base[name]) * grads[name]).sum(dim=(0, 2, 3)))
    return torch.stack(out)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_attr_patterns", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(attr_patterns)

# %% [markdown]
# ## Exercise: attribution of every MLP neuron
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# A neuron is one coordinate of `blocks.{layer}.mlp.hook_post` (`[batch, pos, d_mlp]`, after the nonlinearity).
# Build `attr_neurons(base, source, grads, n_layers)`: return `[n_layers, d_mlp]`, the estimated effect of patching
# one neuron at every position. For GPT-2 small that is 36 864 estimates from the same three passes. It works when
# the estimates add up to those of the whole MLP output.
#
# <details><summary>Hint</summary>Sum over the batch and position axes.</details>

# %% nbgrader={"grade": false, "grade_id": "attr_neurons", "locked": false, "schema_version": 3, "solution": true}
def attr_neurons(base: dict, source: dict, grads: dict, n_layers: int) -> Float[Tensor, "n_layers d_mlp"]:
    """Attribution of each MLP neuron (all positions)."""
    ### BEGIN SOLUTION
    out = []
    for layer in range(n_layers):
        name = f"blocks.{layer}.mlp.hook_post"
        out.append(((source[name] - base[name]) * grads[name]).sum(dim=(0, 1)))
    return torch.stack(out)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_attr_neurons", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(attr_neurons)

# %% [markdown]
# Now the exact answers to compare with. Each of the next functions patches the clean activation into the
# corrupted run, one component at a time, and records the normalised metric minus its corrupted value (0) — so the
# number is directly comparable with the attribution estimate of the same patch.

# %% [markdown]
# ## Exercise: exact residual-stream patching
# > Difficulty 2/5 · Importance 4/5 · ~15 min
#
# Build `act_patch_resid(model, clean_tokens, corrupted_tokens, answer_ids, end_pos)`: as chapter 3's
# `patch_residual`: for every layer and position, run the corrupted tokens with the clean
# `blocks.{layer}.hook_resid_pre` written in at that position (all prompts at once); return `[n_layers, pos]`, the
# normalised metric of the mean logit difference. It works when it matches TransformerLens's
# `patching.get_act_patch_resid_pre`.
#
# <details><summary>Hint 1</summary>Cache the clean run once with <code>model.run_with_cache</code>; compute the clean and corrupted mean logit differences first.</details>
# <details><summary>Hint 2</summary>A hook <code>def hook(resid, hook, layer=layer, pos=pos): resid[:, pos] = clean_cache[f"blocks.{layer}.hook_resid_pre"][:, pos]; return resid</code>, run with <code>model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])</code> under <code>torch.no_grad()</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "act_patch_resid", "locked": false, "schema_version": 3, "solution": true}
def act_patch_resid(model, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
                    answer_ids: Int[Tensor, "batch 2"], end_pos: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers pos"]:
    """Normalised metric after restoring the clean resid_pre at one (layer, position) in the corrupted run."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda n: n.endswith("hook_resid_pre"))
        clean_ld = mean_logit_diff(clean_logits, answer_ids, end_pos)
        corrupted_ld = mean_logit_diff(model(corrupted_tokens), answer_ids, end_pos)
        n_pos = clean_tokens.shape[1]
        out = torch.zeros(model.cfg.n_layers, n_pos)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.hook_resid_pre"
            for pos in range(n_pos):
                def hook(resid, hook, name=name, pos=pos):
                    resid[:, pos] = clean_cache[name][:, pos]
                    return resid
                logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
                out[layer, pos] = normalised_metric(mean_logit_diff(logits, answer_ids, end_pos), clean_ld, corrupted_ld)
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_act_patch_resid", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(act_patch_resid)

# %% [markdown]
# ## Exercise: exact patching of each head at each position
# > Difficulty 3/5 · Importance 5/5 · ~15 min
#
# Build `act_patch_heads_by_pos(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, act="z")`: for every
# layer, position and head, restore the clean `blocks.{layer}.attn.hook_{act}` of that head at that position in
# the corrupted run; return `[n_layers, pos, n_heads]`, the normalised metric. That is
# `n_layers * pos * n_heads` forward passes. It works when `"z"` matches
# `patching.get_act_patch_attn_head_out_by_pos` (which returns `[n_layers, pos, n_heads]` too).
#
# <details><summary>Hint</summary>The hook writes one entry: <code>act[:, pos, head] = clean_cache[name][:, pos, head]</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "act_patch_heads_by_pos", "locked": false, "schema_version": 3, "solution": true}
def act_patch_heads_by_pos(model, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
                           answer_ids: Int[Tensor, "batch 2"], end_pos: Int[Tensor, "batch"],
                           act: str = "z") -> Float[Tensor, "n_layers pos n_heads"]:
    """Normalised metric after restoring one head's clean hook_{act} at one position in the corrupted run."""
    ### BEGIN SOLUTION
    suffix = f"attn.hook_{act}"
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda n: n.endswith(suffix))
        clean_ld = mean_logit_diff(clean_logits, answer_ids, end_pos)
        corrupted_ld = mean_logit_diff(model(corrupted_tokens), answer_ids, end_pos)
        n_pos = clean_tokens.shape[1]
        out = torch.zeros(model.cfg.n_layers, n_pos, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.{suffix}"
            for pos in range(n_pos):
                for head in range(model.cfg.n_heads):
                    def hook(x, hook, name=name, pos=pos, head=head):
                        x[:, pos, head] = clean_cache[name][:, pos, head]
                        return x
                    logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
                    out[layer, pos, head] = normalised_metric(mean_logit_diff(logits, answer_ids, end_pos), clean_ld,
                                                              corrupted_ld)
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_act_patch_heads_by_pos", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(act_patch_heads_by_pos)

# %% [markdown]
# ## Exercise: exact patching of attention patterns
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Build `act_patch_patterns(model, clean_tokens, corrupted_tokens, answer_ids, end_pos)`: restore one head's whole
# clean pattern (`blocks.{layer}.attn.hook_pattern`, head axis 1) in the corrupted run; return `[n_layers, n_heads]`.
# It works when it matches `patching.get_act_patch_attn_head_pattern_all_pos`.
#
# <details><summary>Hint</summary><code>pattern[:, head] = clean_cache[name][:, head]</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "act_patch_patterns", "locked": false, "schema_version": 3, "solution": true}
def act_patch_patterns(model, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
                       answer_ids: Int[Tensor, "batch 2"], end_pos: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]:
    """Normalised metric after restoring one head's clean attention pattern in the corrupted run."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda n: n.endswith("hook_pattern"))
        clean_ld = mean_logit_diff(clean_logits, answer_ids, end_pos)
        corrupted_ld = mean_logit_diff(model(corrupted_tokens), answer_ids, end_pos)
        out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.attn.hook_pattern"
            for head in range(model.cfg.n_heads):
                def hook(pattern, hook, name=name, head=head):
                    pattern[:, head] = clean_cache[name][:, head]
                    return pattern
                logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
                out[layer, head] = normalised_metric(mean_logit_diff(logits, answer_ids, end_pos), clean_ld, corrupted_ld)
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_act_patch_patterns", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(act_patch_patterns)

# %% [markdown]
# ## Exercise: exact patching of a few neurons
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# Exact patching of every neuron would take `n_layers * d_mlp` passes; attribution tells us which few to check.
# Build `act_patch_neurons(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, layer, neurons)`: for each
# neuron index in the list `neurons`, restore that clean neuron of `blocks.{layer}.mlp.hook_post` at every position
# in the corrupted run; return `[len(neurons)]`, the normalised metric. It works when patching every neuron of a
# layer at once would restore the whole MLP.
#
# <details><summary>Hint</summary><code>post[:, :, neuron] = clean_cache[name][:, :, neuron]</code>, one run per neuron.</details>

# %% nbgrader={"grade": false, "grade_id": "act_patch_neurons", "locked": false, "schema_version": 3, "solution": true}
def act_patch_neurons(model, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
                      answer_ids: Int[Tensor, "batch 2"], end_pos: Int[Tensor, "batch"], layer: int,
                      neurons: list[int]) -> Float[Tensor, "n_neurons"]:
    """Normalised metric after restoring one clean MLP neuron (all positions) of `layer`, for each listed neuron."""
    ### BEGIN SOLUTION
    name = f"blocks.{layer}.mlp.hook_post"
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda n: n == name)
        clean_ld = mean_logit_diff(clean_logits, answer_ids, end_pos)
        corrupted_ld = mean_logit_diff(model(corrupted_tokens), answer_ids, end_pos)
        out = torch.zeros(len(neurons))
        for i, neuron in enumerate(neurons):
            def hook(post, hook, neuron=int(neuron)):
                post[:, :, neuron] = clean_cache[name][:, :, neuron]
                return post
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
            out[i] = normalised_metric(mean_logit_diff(logits, answer_ids, end_pos), clean_ld, corrupted_ld)
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_act_patch_neurons", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(act_patch_neurons)

# %% [markdown]
# ## Exercise: the correlation
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# Build `pearson_correlation(x, y)`: two tensors with the same number of entries (any shapes); return the Pearson
# correlation of their flattened entries as a float. It works when `y = 3 x + 1` gives 1 and `y = -x` gives -1.
#
# <details><summary>Hint</summary>Centre both, then <code>(x @ y) / (x.norm() * y.norm())</code>; compute in float64.</details>

# %% nbgrader={"grade": false, "grade_id": "pearson_correlation", "locked": false, "schema_version": 3, "solution": true}
def pearson_correlation(x: Float[Tensor, "..."], y: Float[Tensor, "..."]) -> float:
    """Pearson correlation of the flattened entries of x and y."""
    ### BEGIN SOLUTION
    x, y = x.flatten().double(), y.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    return (x @ y / (x.norm() * y.norm())).item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_pearson_correlation", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(pearson_correlation)

# %% [markdown]
# ### Attribution beside activation patching
#
# First the residual stream, then every head at every position. If you are on the offline model, you should see a
# correlation above 0.95 between attribution and exact patching over all heads at all positions, and the largest
# cell of both in the same place: a layer-1 head at END. (The course's tests check both on the shipped model.)

# %%
resid_attr = attr_resid(corrupted_acts, clean_acts, corrupted_grads, cfg.n_layers)
resid_exact = act_patch_resid(model, clean_tokens, corrupted_tokens, answer_ids, end_pos)
print(f"residual stream: correlation {pearson_correlation(resid_attr, resid_exact):.3f}")
plots.heatmap(torch.cat([resid_exact, resid_attr]), x_labels=pos_labels,
              y_labels=[f"exact L{layer}" for layer in range(cfg.n_layers)] + [f"attr L{layer}" for layer in range(cfg.n_layers)],
              x_title="position", title="Residual stream: activation patching (top) and attribution (bottom)")

# %%
head_attr = attr_heads_by_pos(corrupted_acts, clean_acts, corrupted_grads, cfg.n_layers)
t0 = time.perf_counter()
head_exact = act_patch_heads_by_pos(model, clean_tokens, corrupted_tokens, answer_ids, end_pos)
exact_seconds = time.perf_counter() - t0
head_corr = pearson_correlation(head_attr, head_exact)
print(f"heads x positions: correlation {head_corr:.3f} ({head_exact.numel()} patches, {exact_seconds:.1f} s)")
head_labels = [f"L{layer}H{h}" for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
plots.heatmap(torch.cat([head_exact.transpose(1, 2).flatten(0, 1), head_attr.transpose(1, 2).flatten(0, 1)]),
              x_labels=pos_labels, y_labels=[f"exact {h}" for h in head_labels] + [f"attr {h}" for h in head_labels],
              x_title="position", title="Head outputs by position: activation patching (top) and attribution (bottom)")

# %%
cell_labels = [f"L{layer}H{h} @ {pos_labels[p]}" for layer in range(cfg.n_layers) for p in range(head_exact.shape[1])
               for h in range(cfg.n_heads)]
plots.scatter(head_exact.flatten(), head_attr.flatten(), labels=cell_labels, x_title="activation patching",
              y_title="attribution patching", title=f"Every head at every position (correlation {head_corr:.3f})")

# %% [markdown]
# Attention patterns and neurons. For neurons we check only the ten with the largest estimates in each layer,
# which is how attribution is used on large models: as a cheap filter before exact patching.

# %%
pattern_attr = attr_patterns(corrupted_acts, clean_acts, corrupted_grads, cfg.n_layers)
pattern_exact = act_patch_patterns(model, clean_tokens, corrupted_tokens, answer_ids, end_pos)
print(f"patterns: correlation {pearson_correlation(pattern_attr, pattern_exact):.3f}")
plots.heatmap(torch.cat([pattern_exact, pattern_attr]), x_labels=range(cfg.n_heads), x_title="head",
              y_labels=[f"exact L{layer}" for layer in range(cfg.n_layers)] + [f"attr L{layer}" for layer in range(cfg.n_layers)],
              title="Attention patterns: activation patching (top) and attribution (bottom)").show()

neuron_attr = attr_neurons(corrupted_acts, clean_acts, corrupted_grads, cfg.n_layers)
top_neurons = {layer: neuron_attr[layer].abs().topk(10).indices.tolist() for layer in range(cfg.n_layers)}
neuron_exact = torch.cat([act_patch_neurons(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, layer, top_neurons[layer])
                          for layer in range(cfg.n_layers)])
neuron_est = torch.cat([neuron_attr[layer, top_neurons[layer]] for layer in range(cfg.n_layers)])
print(f"top neurons: correlation {pearson_correlation(neuron_est, neuron_exact):.3f}")
plots.scatter(neuron_exact, neuron_est, labels=[f"L{layer}N{n}" for layer in range(cfg.n_layers) for n in top_neurons[layer]],
              x_title="activation patching", y_title="attribution patching", title="The top neurons of each layer")

# %% [markdown]
# ### Recap of Part 3
# - Three passes give an estimate for every residual-stream position, head, pattern and neuron.
# - On this task and model the estimates for head outputs correlate closely with exact patching; Part 4 shows a
#   task where the sizes are far off.

# %% [markdown]
# # Part 4 · A task with a known answer: induction
#
# **Learning objectives**
# - Run attribution on a second task, with another metric and the other direction of patching.
# - Check it against what chapter 2 found by ablation: a previous-token head in layer 0 and induction heads in
#   layer 1.
#
# On `BOS + R + R` (R random tokens), `attn_only_2l` predicts the second copy from the first. **Corrupt** the first
# copy (other random tokens, the same second copy) and induction has nothing to copy from. Here we patch the other
# way round, **noising**: the base run is the clean one, we patch in activations of the corrupted run, and a head
# matters if that *lowers* the metric. The metric is the mean log-probability of the second copy's tokens `R[1:]`
# (positions `n + 2 ... 2n`, as in chapter 2's loss on each copy, with the opposite sign).

# %%
ind_model = micourse.models.load_model("attn_only_2l")
ind_cfg = ind_model.cfg
bos = ind_model.tokenizer.bos_token_id
N_REP = 20


def repeated_tokens(n_batch: int, n: int, d_vocab: int, bos: int, seed: int) -> Int[Tensor, "n_batch seq"]:
    """BOS + R + R with R uniform over the non-BOS ids (chapter 2's generate_repeated_tokens)."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(0, d_vocab - 1, (n_batch, n), generator=gen)
    r = r + (r >= bos).long()
    return torch.cat([torch.full((n_batch, 1), bos, dtype=torch.long), r, r], dim=1)


# %% [markdown]
# ## Exercise: the second-copy log-probability
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Build `second_copy_logprob(logits, tokens, n)`: `logits` `[batch, 1 + 2n, d_vocab]` on `tokens` `[batch, 1 + 2n]`
# (`BOS + R + R`); return a 0-d tensor: the mean over the batch and over the `n - 1` tokens `R[1] ... R[n - 1]` of
# the second copy (positions `n + 2 ... 2n`) of the log-probability the model gave each of them, one position
# earlier. It works when it equals minus chapter 2's second-copy loss.
#
# <details><summary>Hint 1</summary>The token at position <code>p</code> is predicted by the logits at <code>p - 1</code>: <code>logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])</code> is the log-probability of every token from position 1 on.</details>
# <details><summary>Hint 2</summary>In that <code>[batch, 2n]</code> tensor, index <code>i</code> is the token at position <code>i + 1</code>: keep <code>[:, n + 1:]</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "second_copy_logprob", "locked": false, "schema_version": 3, "solution": true}
def second_copy_logprob(logits: Float[Tensor, "batch seq d_vocab"], tokens: Int[Tensor, "batch seq"],
                        n: int) -> Float[Tensor, ""]:
    """Mean log-probability of R[1:] in the second copy of BOS + R + R."""
    ### BEGIN SOLUTION
    logprobs = logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    return logprobs[:, n + 1:].mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_second_copy_logprob", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(second_copy_logprob)

# %% [markdown]
# ## Exercise: corrupt the first copy
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# Build `corrupt_first_copy(tokens, n, other)`: `tokens` is `BOS + R + R` `[batch, 1 + 2n]`, `other` is another
# batch of the same shape; return a copy of `tokens` whose first copy (positions `1 ... n`) is taken from `other`,
# BOS and the second copy unchanged. Do not modify the input. It works when the second copies still agree.
#
# <details><summary>Hint</summary><code>out = tokens.clone(); out[:, 1:n + 1] = other[:, 1:n + 1]</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "corrupt_first_copy", "locked": false, "schema_version": 3, "solution": true}
def corrupt_first_copy(tokens: Int[Tensor, "batch seq"], n: int, other: Int[Tensor, "batch seq"]) -> Int[Tensor, "batch seq"]:
    """tokens with positions 1..n (the first copy) taken from other."""
    ### BEGIN SOLUTION
    out = tokens.clone()
    out[:, 1:n + 1] = other[:, 1:n + 1]
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_corrupt_first_copy", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(corrupt_first_copy)

# %% [markdown]
# ## Exercise: activations and gradients for the second copy
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Build `induction_acts_and_grads(model, tokens, names)`: as `acts_and_grads`, with this task's metric. Run `tokens`
# (`BOS + R + R`, so `n = (pos - 1) // 2`), compute `second_copy_logprob`, backpropagate it once, and return
# `(value, acts, grads)`: the metric as a float and two dicts from each hook name in `names` to its activation and to
# the gradient of the metric with respect to it. It works when the value is minus chapter 2's second-copy loss and
# the gradients match TransformerLens's backward hooks.
#
# <details><summary>Hint</summary>Copy your <code>acts_and_grads</code> and change the metric; keep the forward hooks returning the activation.</details>

# %% nbgrader={"grade": false, "grade_id": "induction_acts_and_grads", "locked": false, "schema_version": 3, "solution": true}
def induction_acts_and_grads(model, tokens: Int[Tensor, "batch seq"], names: list[str]) -> tuple[float, dict, dict]:
    """(second-copy log-probability, {name: activation}, {name: its gradient}) from one forward + backward pass."""
    ### BEGIN SOLUTION
    n = (tokens.shape[1] - 1) // 2
    acts, grads = {}, {}
    fwd_hooks, bwd_hooks = [], []
    for name in names:
        def save_act(act, hook, name=name):
            acts[name] = act.detach().clone()
            return act

        def save_grad(grad, hook, name=name):
            grads[name] = grad.detach().clone()

        fwd_hooks.append((name, save_act))
        bwd_hooks.append((name, save_grad))
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd_hooks, bwd_hooks=bwd_hooks):
        value = second_copy_logprob(model(tokens), tokens, n)
        value.backward()
    model.zero_grad(set_to_none=True)
    return value.item(), acts, grads
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_induction_acts_and_grads", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(induction_acts_and_grads)

# %% [markdown]
# ## Exercise: attribution of every head for induction
# > Difficulty 3/5 · Importance 5/5 · ~20 min
#
# Build `induction_head_attribution(model, clean_tokens, corrupted_tokens)` (both `[batch, 1 + 2n]`, the clean one
# `BOS + R + R`): with the clean run as base, store every layer's `hook_z` and the gradient of
# `second_copy_logprob` on the clean run; store the corrupted run's `hook_z`; return `[n_layers, n_heads]`, the
# attribution of patching one head's corrupted `z` at every position into the clean run. It works when a run with
# `corrupted_tokens = clean_tokens` gives zeros.
#
# <details><summary>Hint 1</summary>Two calls of <code>induction_acts_and_grads</code> (the corrupted run's gradients are not needed) and one of <code>attr_heads_by_pos</code>, with the roles of base and source this task needs.</details>
# <details><summary>Hint 2</summary>Sum the by-position attribution over positions.</details>

# %% nbgrader={"grade": false, "grade_id": "induction_head_attribution", "locked": false, "schema_version": 3, "solution": true}
def induction_head_attribution(model, clean_tokens: Int[Tensor, "batch seq"],
                               corrupted_tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "n_layers n_heads"]:
    """Noising attribution of every head's z (all positions) for the second-copy log-probability."""
    ### BEGIN SOLUTION
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    _, clean_acts, clean_grads = induction_acts_and_grads(model, clean_tokens, names)
    _, corrupted_acts, _ = induction_acts_and_grads(model, corrupted_tokens, names)
    return attr_heads_by_pos(clean_acts, corrupted_acts, clean_grads, model.cfg.n_layers).sum(dim=1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_induction_head_attribution", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(induction_head_attribution)

# %% [markdown]
# Chapter 2 found the heads by their attention; here are those scores again (previous-token: attention from each
# position to the one before; induction: from the second copy to the token after the same token in the first
# copy), beside the attribution. If you are on the shipped model, you should see the heads with the three most
# negative attributions be exactly the layer-0 head with the highest previous-token score and the layer-1 heads
# whose induction score is at least 0.4 (chapter 2's threshold). The course's tests check this on the shipped
# model.

# %%
rep_clean = repeated_tokens(8, N_REP, ind_cfg.d_vocab, bos, seed=0)
rep_corrupted = corrupt_first_copy(rep_clean, N_REP, repeated_tokens(8, N_REP, ind_cfg.d_vocab, bos, seed=1))
with torch.no_grad():
    _, rep_cache = ind_model.run_with_cache(rep_clean, names_filter=lambda name: name.endswith("hook_pattern"))
    print(f"second-copy log-probability: clean {second_copy_logprob(ind_model(rep_clean), rep_clean, N_REP):.2f}, "
          f"corrupted {second_copy_logprob(ind_model(rep_corrupted), rep_corrupted, N_REP):.2f}")
prev_scores = torch.stack([rep_cache["pattern", layer].diagonal(-1, dim1=-2, dim2=-1).mean((0, -1))
                           for layer in range(ind_cfg.n_layers)])
ind_scores = torch.stack([rep_cache["pattern", layer].diagonal(1 - N_REP, dim1=-2, dim2=-1)[..., 2:].mean((0, -1))
                          for layer in range(ind_cfg.n_layers)])
ind_attr = induction_head_attribution(ind_model, rep_clean, rep_corrupted)
ranked = [divmod(int(i), ind_cfg.n_heads) for i in ind_attr.flatten().argsort()]
prev_head = (0, int(prev_scores[0].argmax()))
induction_heads = [(1, h) for h in range(ind_cfg.n_heads) if ind_scores[1, h] >= 0.4]
print(f"previous-token head by score: L{prev_head[0]}H{prev_head[1]}; induction heads by score: "
      f"{[f'L{layer}H{h}' for layer, h in induction_heads]}")
print("heads by attribution, most negative first:", [f"L{layer}H{h} ({ind_attr[layer, h]:.2f})" for layer, h in ranked])
plots.layer_head_grid(ind_attr, title="Attribution of each head's output for the second copy (noising)")

# %% [markdown]
# ## Exercise: exact noising of each head at each position
# > Difficulty 3/5 · Importance 4/5 · ~15 min
#
# For Part 5 we need the exact answers on this task too. Build `induction_patch_by_pos(model, clean_tokens,
# corrupted_tokens, act)`: for every layer, position and head, run the clean tokens with that head's
# `blocks.{layer}.attn.hook_{act}` at that position taken from the corrupted run; return `[n_layers, pos, n_heads]`:
# the second-copy log-probability of the patched run minus that of the clean run. It works when patching at BOS
# (position 0, where both runs have seen the same single token) changes nothing.
#
# <details><summary>Hint</summary>As <code>act_patch_heads_by_pos</code>, with roles swapped (cache the corrupted run, patch into the clean one) and the metric of this task.</details>

# %% nbgrader={"grade": false, "grade_id": "induction_patch_by_pos", "locked": false, "schema_version": 3, "solution": true}
def induction_patch_by_pos(model, clean_tokens: Int[Tensor, "batch seq"], corrupted_tokens: Int[Tensor, "batch seq"],
                           act: str = "z") -> Float[Tensor, "n_layers pos n_heads"]:
    """Change in second-copy log-probability when one head's hook_{act} at one position comes from the corrupted run."""
    ### BEGIN SOLUTION
    n = (clean_tokens.shape[1] - 1) // 2
    suffix = f"attn.hook_{act}"
    with torch.no_grad():
        _, corrupted_cache = model.run_with_cache(corrupted_tokens, names_filter=lambda name: name.endswith(suffix))
        base = second_copy_logprob(model(clean_tokens), clean_tokens, n)
        n_pos = clean_tokens.shape[1]
        out = torch.zeros(model.cfg.n_layers, n_pos, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.{suffix}"
            for pos in range(n_pos):
                for head in range(model.cfg.n_heads):
                    def hook(x, hook, name=name, pos=pos, head=head):
                        x[:, pos, head] = corrupted_cache[name][:, pos, head]
                        return x
                    logits = model.run_with_hooks(clean_tokens, fwd_hooks=[(name, hook)])
                    out[layer, pos, head] = second_copy_logprob(logits, clean_tokens, n) - base
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_induction_patch_by_pos", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(induction_patch_by_pos)

# %% [markdown]
# The estimates against the exact effects, head by head and position by position. If you are on the shipped
# model, you should see attribution rank the heads right but get the sizes wrong: a relative error above 0.5, with
# the estimates smaller in total than the exact effects. The induction heads put a large share of their attention
# on one key (their induction scores, printed above), where the softmax is flat, as the toy sigmoid was in Part 1;
# and the patch is large: a whole copy is replaced.

# %%
ind_names = [f"blocks.{layer}.attn.hook_{a}" for layer in range(ind_cfg.n_layers) for a in ("q", "k", "z", "pattern")]
_, rep_clean_acts, rep_clean_grads = induction_acts_and_grads(ind_model, rep_clean, ind_names)
_, rep_corrupted_acts, _ = induction_acts_and_grads(ind_model, rep_corrupted, ind_names)
ind_z_attr = attr_heads_by_pos(rep_clean_acts, rep_corrupted_acts, rep_clean_grads, ind_cfg.n_layers)
ind_z_exact = induction_patch_by_pos(ind_model, rep_clean, rep_corrupted, "z")
print(f"heads x positions: correlation {pearson_correlation(ind_z_attr, ind_z_exact):.3f}, "
      f"relative error {relative_error(ind_z_attr, ind_z_exact):.2f}")
plots.scatter(ind_z_exact.flatten(), ind_z_attr.flatten(), x_title="activation patching", y_title="attribution patching",
              title="Induction: every head at every position")

# %% [markdown]
# ### Recap of Part 4
# - The same three passes, with the log-probability of the second copy as the metric and the clean run as base,
#   single out the previous-token and induction heads that chapter 2 found by their attention and by ablation.
# - The ranking is right; the sizes are not. Part 5 is about why.

# %% [markdown]
# # Part 5 · Where it breaks: the AtP* fixes
#
# **Learning objectives**
# - Replace the linearisation through the attention softmax by an exact recomputation, for queries and keys.
# - Drop one layer's gradient at a time (GradDrop) to expose effects that cancel.
# - Measure what each fix recovers against exact activation patching.
#
# A query or a key acts on the output only through the attention pattern, `softmax(q k^T / sqrt(d_head))`. Plain
# attribution linearises through that softmax; where it is saturated, the gradient is nearly zero even when the
# patch moves the attention completely. Kramár et al. (2024) keep the softmax exact: for a patched key at position
# `s`, recompute the scores of every query with the new key (and the old keys elsewhere), take the softmax exactly,
# and linearise only *after* the pattern: `(new pattern - old pattern) · ∂M/∂pattern`. For a patched query at `t`
# only row `t` of the pattern changes. This costs no extra forward pass: everything needed is in the stored
# queries, keys, patterns and pattern gradients.

# %% [markdown]
# ## Exercise: the QK fix for keys
# > Difficulty 4/5 · Importance 4/5 · ~25 min
#
# Build `qk_fix_keys(base, source, grads, n_layers, attn_scale)`: `base` and `source` hold
# `blocks.{layer}.attn.hook_q`, `hook_k` (`[batch, pos, n_heads, d_head]`) and `hook_pattern`; `grads` holds the
# base run's gradient at `hook_pattern`; `attn_scale` is `sqrt(d_head)`. For every layer, key position `s` and head:
# compute the base scores `q k^T / attn_scale`, replace column `s` by the scores of every query with the
# **source** key at `s`, apply the causal mask, take the softmax over keys, and return
# `sum (new pattern - base pattern) * grad` over batch and both position axes. Result `[n_layers, pos, n_heads]`.
# It works when the base scores reproduce the stored pattern, and patching a key with itself gives 0.
#
# <details><summary>Hint 1</summary><code>torch.einsum("bqhd,bkhd->bhqk", q, k) / attn_scale</code> gives scores <code>[batch, n_heads, q_pos, k_pos]</code>; the scores with the source keys are the same einsum with the source <code>k</code>: its column <code>s</code> is what you need.</details>
# <details><summary>Hint 2</summary>Mask with <code>scores.masked_fill(~torch.tril(torch.ones(P, P, dtype=torch.bool)), float("-inf"))</code> before the softmax, and loop over <code>s</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "qk_fix_keys", "locked": false, "schema_version": 3, "solution": true}
def qk_fix_keys(base: dict, source: dict, grads: dict, n_layers: int,
                attn_scale: float) -> Float[Tensor, "n_layers pos n_heads"]:
    """Attribution of patching one head's key at one position, with the attention softmax recomputed exactly."""
    ### BEGIN SOLUTION
    out = []
    for layer in range(n_layers):
        prefix = f"blocks.{layer}.attn."
        q, k, k_source = base[prefix + "hook_q"], base[prefix + "hook_k"], source[prefix + "hook_k"]
        pattern, grad = base[prefix + "hook_pattern"], grads[prefix + "hook_pattern"]
        n_pos = q.shape[1]
        causal = torch.tril(torch.ones(n_pos, n_pos, dtype=torch.bool))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / attn_scale
        source_scores = torch.einsum("bqhd,bkhd->bhqk", q, k_source) / attn_scale
        per_pos = []
        for s in range(n_pos):
            new_scores = scores.clone()
            new_scores[..., s] = source_scores[..., s]
            new_pattern = new_scores.masked_fill(~causal, float("-inf")).softmax(-1)
            per_pos.append(((new_pattern - pattern) * grad).sum(dim=(0, 2, 3)))
        out.append(torch.stack(per_pos))
    return torch.stack(out)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_qk_fix_keys", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(qk_fix_keys)

# %% [markdown]
# ## Exercise: the QK fix for queries
# > Difficulty 3/5 · Importance 4/5 · ~15 min
#
# Build `qk_fix_queries(base, source, grads, n_layers, attn_scale)`: the same for a patched query at position `t`:
# only row `t` of the pattern changes, to the softmax of the **source** query's scores against the base keys.
# Return `[n_layers, pos, n_heads]`. Since rows don't interact, all positions can be done at once.
#
# <details><summary>Hint</summary>The pattern of source queries against base keys, <code>softmax(mask(q_source k_base^T / attn_scale))</code>, has as row <code>t</code> exactly the new row <code>t</code>; sum <code>(that - base pattern) * grad</code> over batch and keys only, then move the head axis last.</details>

# %% nbgrader={"grade": false, "grade_id": "qk_fix_queries", "locked": false, "schema_version": 3, "solution": true}
def qk_fix_queries(base: dict, source: dict, grads: dict, n_layers: int,
                   attn_scale: float) -> Float[Tensor, "n_layers pos n_heads"]:
    """Attribution of patching one head's query at one position, with the attention softmax recomputed exactly."""
    ### BEGIN SOLUTION
    out = []
    for layer in range(n_layers):
        prefix = f"blocks.{layer}.attn."
        q_source, k = source[prefix + "hook_q"], base[prefix + "hook_k"]
        pattern, grad = base[prefix + "hook_pattern"], grads[prefix + "hook_pattern"]
        n_pos = k.shape[1]
        causal = torch.tril(torch.ones(n_pos, n_pos, dtype=torch.bool))
        new_pattern = (torch.einsum("bqhd,bkhd->bhqk", q_source, k) / attn_scale).masked_fill(~causal, float("-inf")).softmax(-1)
        out.append(((new_pattern - pattern) * grad).sum(dim=(0, 3)).T)
    return torch.stack(out)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_qk_fix_queries", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(qk_fix_queries)

# %% [markdown]
# How much does the fix recover? We compare plain attribution of queries and keys (`attr_heads_by_pos` with
# `act="q"` or `"k"`) and the QK fix with exact patching, on both tasks. If you are on the shipped models, you
# should see the QK fix lower the relative error for the keys on IOI and, by more than 0.1, for the queries on the
# induction task; the course's tests check exactly these two on the shipped models. It does not help every kind of
# node: compare the other two rows. What the fix cannot remove comes from the nonlinearities *after* the pattern (the
# final LayerNorm, the log-softmax of the metric, MLPs), which AtP* leaves linearised.

# %%
attn_scale = cfg.d_head ** 0.5
ind_scale = ind_cfg.d_head ** 0.5
fix_rows = []
for task, (b_acts, s_acts, g, n_layers, scale, exact_fn) in {
    "IOI": (corrupted_acts, clean_acts, corrupted_grads, cfg.n_layers, attn_scale,
            lambda a: act_patch_heads_by_pos(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, a)),
    "induction": (rep_clean_acts, rep_corrupted_acts, rep_clean_grads, ind_cfg.n_layers, ind_scale,
                  lambda a: induction_patch_by_pos(ind_model, rep_clean, rep_corrupted, a)),
}.items():
    for a, fix in (("k", qk_fix_keys), ("q", qk_fix_queries)):
        exact = exact_fn(a)
        plain_err = relative_error(attr_heads_by_pos(b_acts, s_acts, g, n_layers, a), exact)
        fixed_err = relative_error(fix(b_acts, s_acts, g, n_layers, scale), exact)
        fix_rows.append((task, a, plain_err, fixed_err))
        print(f"{task:9s} {'keys' if a == 'k' else 'queries':7s}: relative error AtP {plain_err:.3f}, with QK fix {fixed_err:.3f}")

# %% [markdown]
# ## Exercise: GradDrop
# > Difficulty 4/5 · Importance 3/5 · ~25 min
#
# A component can have a large direct effect and an opposite indirect effect through later layers; the sum, which
# is what attribution estimates, can be near zero although patching the component and part of its downstream
# would matter a lot. Kramár et al. (2024) expose this with **GradDrop**: for each layer `l`, rerun the backward pass
# with the gradient through layer `l`'s writes into the residual stream set to zero (what layer `l` does with the
# component's effect is dropped), compute the attribution `AtP_l` with that gradient, and score the component by
# `sum_l |AtP_l| / (L - 1)`. Dropping the component's own layer gives 0 and dropping an earlier layer changes
# nothing, hence the `L - 1`.
#
# Build `graddrop_heads_by_pos(model, clean_tokens, corrupted_tokens, answer_ids, end_pos)` for chapter 3's IOI
# setting (base = corrupted run, source = clean run, metric = `normalised_metric` of `mean_logit_diff`): return
# `[n_layers, pos, n_heads]`, the GradDrop score of each head's `z` at each position. To stop the gradient through
# a layer's writes, add forward hooks on `blocks.{l}.hook_attn_out` and, where the model has MLPs,
# `blocks.{l}.hook_mlp_out` that return `act.detach()`: the forward pass is unchanged, the gradient stops there. A
# `z` whose gradient never arrives (its whole path was dropped) counts as 0. It works when, on a one-layer model,
# every score would be zero — and on two layers, a layer-1 head's score is `|AtP|`.
#
# <details><summary>Hint 1</summary>Get the clean <code>z</code> and the corrupted one once (<code>run_with_cache</code>), then for each dropped layer run one forward + backward pass on the corrupted tokens with the detaching hooks and backward hooks on every <code>hook_z</code>.</details>
# <details><summary>Hint 2</summary>The normalisation needs the clean and corrupted mean logit differences: compute them first. Check <code>name in model.hook_dict</code> before hooking <code>hook_mlp_out</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "graddrop_heads_by_pos", "locked": false, "schema_version": 3, "solution": true}
def graddrop_heads_by_pos(model, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
                          answer_ids: Int[Tensor, "batch 2"], end_pos: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers pos n_heads"]:
    """sum over dropped layers l of |attribution with layer l's residual writes cut from the backward pass|, / (L - 1)."""
    ### BEGIN SOLUTION
    n_layers = model.cfg.n_layers
    z_names = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda name: name in z_names)
        corrupted_logits, corrupted_cache = model.run_with_cache(corrupted_tokens, names_filter=lambda name: name in z_names)
        clean_ld = mean_logit_diff(clean_logits, answer_ids, end_pos)
        corrupted_ld = mean_logit_diff(corrupted_logits, answer_ids, end_pos)
    total = torch.zeros(n_layers, clean_tokens.shape[1], model.cfg.n_heads)
    for dropped in range(n_layers):
        grads = {}
        bwd = [(name, lambda g, hook, name=name: grads.__setitem__(name, g.detach().clone())) for name in z_names]
        cut = [name for name in (f"blocks.{dropped}.hook_attn_out", f"blocks.{dropped}.hook_mlp_out") if name in model.hook_dict]
        fwd = [(name, lambda x, hook: x.detach()) for name in cut]
        with torch.enable_grad(), model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
            normalised_metric(mean_logit_diff(model(corrupted_tokens), answer_ids, end_pos), clean_ld, corrupted_ld).backward()
        model.zero_grad(set_to_none=True)
        for layer, name in enumerate(z_names):
            if name in grads:
                total[layer] += ((clean_cache[name] - corrupted_cache[name]) * grads[name]).sum(dim=(0, 3)).abs()
    return total / (n_layers - 1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_graddrop_heads_by_pos", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(graddrop_heads_by_pos)

# %% [markdown]
# GradDrop scores are magnitudes, so we compare them with the magnitudes of exact patching, beside the magnitudes
# of plain attribution. With two layers there is little room for cancellation: the printout says how much GradDrop
# changes here; on deeper models, where many later layers can undo an effect, it matters more.

# %%
gd = graddrop_heads_by_pos(model, clean_tokens, corrupted_tokens, answer_ids, end_pos)
print(f"|heads x positions|: relative error of |AtP| {relative_error(head_attr.abs(), head_exact.abs()):.3f}, "
      f"of GradDrop {relative_error(gd, head_exact.abs()):.3f}")
plots.scatter(head_exact.abs().flatten(), gd.flatten(), x_title="|activation patching|", y_title="GradDrop score",
              title="GradDrop against exact patching, every head at every position")

# %% [markdown]
# ### Recap of Part 5
# - Recomputing the attention softmax for patched queries and keys removes the error of linearising through it;
#   errors from later nonlinearities remain.
# - GradDrop trades the sign of an estimate for robustness to effects that cancel across layers.

# %% [markdown]
# # Part 6 · Speed
#
# Exact patching of every head at every position costs `n_layers * pos * n_heads` forward passes; attribution costs
# two forward passes and one backward pass, whatever the number of components. Here are both, timed on the
# prompts above. (`bench/bench_attribution.py` in the course repository times the same comparison on the shipped IOI
# model.) Times depend on the machine; the number of passes does not.

# %%
t0 = time.perf_counter()
with torch.no_grad():
    _, timed_clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda name: name.endswith("hook_z"))
_, timed_acts, timed_grads = acts_and_grads(model, corrupted_tokens, answer_ids, end_pos, clean_ld, corrupted_ld,
                                            [f"blocks.{layer}.attn.hook_z" for layer in range(cfg.n_layers)])
timed_attr = attr_heads_by_pos(timed_acts, {k: timed_clean_cache[k] for k in timed_acts}, timed_grads, cfg.n_layers)
attr_seconds = time.perf_counter() - t0
n_passes = cfg.n_layers * clean_tokens.shape[1] * cfg.n_heads
print(f"activation patching: {n_passes} forward passes, {exact_seconds:.2f} s")
print(f"attribution patching: 2 forward passes + 1 backward pass, {attr_seconds:.2f} s "
      f"({exact_seconds / attr_seconds:.0f}x faster here)")

# %% [markdown]
# ## What you found
#
# - Attribution patching is one line, `(source - base) · gradient`, applied to every activation stored in three
#   passes. On the offline IOI model it tracks exact patching of head outputs closely (correlation above 0.95).
# - On repeated tokens it ranks the previous-token and induction heads of chapter 2 first, but underestimates
#   their effects: in the clean run the induction heads' attention and the model's predictions are saturated.
# - The AtP* QK fix recomputes the attention softmax for patched queries and keys; on the shipped models it lowers
#   the error for IOI's keys and, more, for the induction task's queries, and what remains is the linearisation
#   after the pattern. GradDrop guards against effects that cancel across layers.
# - Its use: a cheap filter over thousands of components, followed by exact patching of the few it flags.
