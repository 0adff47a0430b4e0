# %% [markdown]
# # Chapter 5 · Superposition
#
# A layer with `m` dimensions can hold `m` features without interference, one per orthogonal direction.
# Elhage et al. (2022, *Toy Models of Superposition*) showed that small ReLU models store *more* features
# than they have dimensions when the features are sparse. They accept some interference and filter it
# out with the nonlinearity. This chapter rebuilds their main results on a CPU in a few minutes:
#
# 1. **A toy model, and many at once.** The model, its data and its loss, trained as a whole sweep
#    of models in one run.
# 2. **The geometry of superposition.** Which features a model keeps, and how it arranges them
#    (orthogonal pairs, antipodal pairs, pentagons), as sparsity grows.
# 3. **Superposition as a phase change.** One feature, two candidates: when does the model drop the
#    second feature, give it the dimension, or put both in superposition?
# 4. **Correlated and anticorrelated features.** How the statistics of the data change the geometry.
# 5. **Computation in superposition.** A hidden ReLU layer computing `|x|` for more features than it
#    has neurons.
# 6. **Recovering features with a sparse autoencoder** (Bricken et al. 2023, *Towards
#    Monosemanticity*). We take the features back out of a model in superposition without being
#    told what they are.
#
# Everything here is trained from scratch with a fixed seed; no model is downloaded. Each training call
# takes seconds and shows a progress bar.

# %%
import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from plotly.subplots import make_subplots
from torch import Tensor
from tqdm.auto import tqdm

from micourse import plots
from micourse.checks import check

# %% [markdown]
# ### Plotting helpers for this chapter
#
# Two small helpers (read them if you like; nothing to do here). `plot_features_2d` draws the columns of
# each instance's `W` (one arrow per feature) when the hidden layer is 2-dimensional, and
# `plot_feature_bars` shows each feature's norm `||W_i||`, coloured by how much it shares its direction
# with other features.

# %%
FEATURE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf"]


def plot_features_2d(W: Float[Tensor, "inst 2 feats"], titles: list[str], colours: list[str] | None = None,
                     title: str = "", names: list[str] | None = None) -> go.Figure:
    """One panel per instance; feature i is an arrow from the origin to W[inst, :, i]."""
    n_inst, _, n_feats = W.shape
    colours = colours or [FEATURE_COLOURS[i % len(FEATURE_COLOURS)] for i in range(n_feats)]
    names = names or [f"feature {i}" for i in range(n_feats)]
    fig = make_subplots(rows=1, cols=n_inst, subplot_titles=titles, horizontal_spacing=0.02)
    lim = max(1.5, float(W.norm(dim=1).max()) * 1.1)
    for k in range(n_inst):
        for i in range(n_feats):
            x, y = float(W[k, 0, i]), float(W[k, 1, i])
            fig.add_trace(go.Scatter(x=[0, x], y=[0, y], mode="lines+markers", line=dict(color=colours[i]),
                                     marker=dict(size=[0, 8]), name=names[i], legendgroup=names[i],
                                     showlegend=k == 0), row=1, col=k + 1)
        fig.update_xaxes(range=[-lim, lim], showticklabels=False, row=1, col=k + 1)
        fig.update_yaxes(range=[-lim, lim], showticklabels=False, scaleanchor=f"x{k + 1 if k else ''}",
                         row=1, col=k + 1)
    fig.update_layout(title=title, height=260, width=max(500, 170 * n_inst), margin=dict(t=70, b=10))
    return fig


def plot_feature_bars(norms: Float[Tensor, "inst feats"], superposition: Float[Tensor, "inst feats"],
                      titles: list[str], title: str = "") -> go.Figure:
    """One panel per instance: a bar per feature with height ||W_i||, coloured by its superposition."""
    n_inst, n_feats = norms.shape
    fig = make_subplots(rows=1, cols=n_inst, subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.02)
    for k in range(n_inst):
        fig.add_trace(go.Bar(x=list(range(n_feats)), y=norms[k].tolist(),
                             marker=dict(color=superposition[k].clamp(0, 1).tolist(), colorscale="Viridis",
                                         cmin=0, cmax=1, showscale=k == 0,
                                         colorbar=dict(title="superposition"))), row=1, col=k + 1)
    fig.update_layout(title=title, height=280, width=max(500, 170 * n_inst), showlegend=False,
                      margin=dict(t=70, b=10))
    fig.update_yaxes(title_text="||W_i||", col=1)
    return fig


# %% [markdown]
# ## 1. A toy model, and many at once
#
# **Learning objectives**
# - Generate sparse synthetic features: feature `i` is 0 with probability `S` (the *sparsity*), and
#   otherwise drawn from U[0, 1].
# - Write the toy model `h = W x`, `x' = ReLU(Wᵀh + b)` and its importance-weighted reconstruction loss.
# - Train many models at once by giving every tensor a leading `inst` (instances) dimension, one
#   sparsity per instance.
#
# Elhage et al. (section "Demonstrating Superposition") ask whether a model that must squeeze `n`
# features through `m < n` dimensions keeps only the `m` most important ones, as PCA would, or keeps
# more. The data: `x ∈ Rⁿ` with independent features that are often zero. The model maps `x` down to
# `h = W x ∈ Rᵐ` and back up with the *same* matrix, `x' = ReLU(Wᵀ h + b)`. Column `W_i` (shape `m`) is
# where feature `i` lives in the hidden space. Features differ in *importance* `I_i` and the loss is
# `Σ_i I_i (x_i − x'_i)²`.
#
# Throughout the chapter every tensor has a leading instances dimension: `W` is `[inst, d_hidden, feats]`,
# `b_final` is `[inst, feats]`, a batch `x` is `[batch, inst, feats]`. Each instance is an independent
# model with its own data settings. A whole sweep over sparsity then trains in one loop, which is far
# faster than training the models one by one (see `bench/bench_superposition.py`).

# %% [markdown]
# ## Exercise: sparse feature batches
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# Sparsity is what the whole chapter turns on. A feature that is rarely present rarely interferes with
# the others, so the model can afford to share directions. The paper uses feature *probability*
# `p = 1 − S` (the chance a feature is nonzero), and so do we.
#
# Build `generate_batch`: given `feature_probability` `[inst, feats]`, return a batch `[batch, inst, feats]`
# where each entry is independently 0 with probability `1 − p` (its own `p`), else uniform on [0, 1].
# You'll know it worked when roughly a fraction `p` of each feature's entries are nonzero.
#
# <details><summary>Hint 1</summary>Every entry needs two independent random draws: one decides whether the feature is present, the other gives its value. Nothing is shared between the features of a sample.</details>
# <details><summary>Hint 2</summary><code>torch.rand</code> for both draws (comparing with <code>feature_probability</code> broadcasts it over the batch), and <code>torch.where</code> to combine them.</details>

# %% nbgrader={"grade": false, "grade_id": "generate_batch", "locked": false, "schema_version": 3, "solution": true}
def generate_batch(batch_size: int, feature_probability: Float[Tensor, "inst feats"]) -> Float[Tensor, "batch inst feats"]:
    """Sparse features: x[b, k, i] is 0 with probability 1 - feature_probability[k, i], else ~ U[0, 1].

    Every entry is drawn independently (features of one sample are independent of each other)."""
    ### BEGIN SOLUTION
    shape = (batch_size, *feature_probability.shape)
    present = torch.rand(shape) < feature_probability
    return torch.where(present, torch.rand(shape), 0.0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_generate_batch", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(generate_batch)

# %% [markdown]
# What you should see: each instance's fraction of nonzero entries tracks its feature probability.

# %%
demo_probability = torch.tensor([1.0, 0.3, 0.05])[:, None].expand(3, 5)
demo_batch = generate_batch(10_000, demo_probability)
print("feature probability per instance:", [round(v, 3) for v in demo_probability[:, 0].tolist()])
print("fraction nonzero per instance:   ", [round(v, 3) for v in (demo_batch != 0).float().mean((0, 2)).tolist()])

# %% [markdown]
# ## Exercise: the toy model's forward pass
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# This is the model of Elhage et al. (section "Demonstrating Superposition"): `h = W x`, then
# `x' = ReLU(Wᵀ h + b)`. With no ReLU it would be a linear autoencoder, which can do no better than
# keeping the top-`m` principal components. The ReLU and the negative bias let the model filter out small
# amounts of interference, and that is what makes superposition pay.
#
# Build `toy_forward`: from `W` `[inst, d_hidden, feats]`, `b_final` `[inst, feats]` and a batch
# `x` `[batch, inst, feats]`, return `x'` `[batch, inst, feats]`. Each instance uses only its own `W` and
# `b_final`. You'll know it worked when an instance with `W = I` and `b = 0` returns its input unchanged.
#
# <details><summary>Hint 1</summary>Go down to the hidden space with <code>W</code> and back up with the same <code>W</code>, each instance with its own matrix. The ReLU comes last, after the bias; the hidden layer has none.</details>
# <details><summary>Hint 2</summary><code>torch.einsum</code>, once for each direction, with the instance index shared by <code>W</code> and <code>x</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "toy_forward", "locked": false, "schema_version": 3, "solution": true}
def toy_forward(W: Float[Tensor, "inst d_hidden feats"], b_final: Float[Tensor, "inst feats"],
                x: Float[Tensor, "batch inst feats"]) -> Float[Tensor, "batch inst feats"]:
    """x' = ReLU(W^T (W x) + b_final), computed separately for every instance."""
    ### BEGIN SOLUTION
    h = torch.einsum("khf,bkf->bkh", W, x)
    return torch.relu(torch.einsum("khf,bkh->bkf", W, h) + b_final)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_toy_forward", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(toy_forward)

# %% [markdown]
# ## Exercise: importance-weighted loss
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# Importance is how the paper says which features matter more to the model's downstream use. A model
# that must drop features drops the least important ones first. The loss of an instance is
# `L = E_x [ Σ_i I_i (x_i − x'_i)² ]`: summed over features, averaged over the batch.
#
# Build `importance_weighted_loss`: from `out` and `x` `[batch, inst, feats]` and `importance`
# `[inst, feats]`, return each instance's loss `[inst]`. You'll know it worked when `out = 0`,
# `x = 1` and unit importance give a loss equal to the number of features.
#
# <details><summary>Hint 1</summary>Weight the squared error, sum over the last axis, then average over the first.</details>

# %% nbgrader={"grade": false, "grade_id": "importance_weighted_loss", "locked": false, "schema_version": 3, "solution": true}
def importance_weighted_loss(out: Float[Tensor, "batch inst feats"], x: Float[Tensor, "batch inst feats"],
                             importance: Float[Tensor, "inst feats"]) -> Float[Tensor, "inst"]:
    """Per instance: mean over the batch of sum_i importance[i] * (x_i - out_i)^2."""
    ### BEGIN SOLUTION
    return (importance * (x - out) ** 2).sum(-1).mean(0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_importance_weighted_loss", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(importance_weighted_loss)

# %% [markdown]
# ### Provided: where a training batch comes from
#
# `train_toy_model` gets its batches from `sample_features` below. By default the features are
# independent (your `generate_batch`). Section 4 adds correlated and anticorrelated pairs of features,
# which you will write there; until then only the default branch runs.

# %%
def sample_features(batch_size: int, feature_probability: Float[Tensor, "inst feats"],
                    correlation: str = "none") -> Float[Tensor, "batch inst feats"]:
    """A batch of features. correlation: "none" (independent), "correlated" or "anticorrelated" (features
    2k and 2k+1 form pair k, present with probability feature_probability[:, 2k]; see section 4)."""
    if correlation == "none":
        return generate_batch(batch_size, feature_probability)
    pair_probability = feature_probability[:, 0::2]
    if correlation == "correlated":
        return generate_correlated_batch(batch_size, pair_probability)
    if correlation == "anticorrelated":
        return generate_anticorrelated_batch(batch_size, pair_probability)
    raise ValueError(f"correlation must be 'none', 'correlated' or 'anticorrelated', not {correlation!r}")


# %% [markdown]
# ## Exercise: train many toy models at once
# > Difficulty 3/5 · Importance 5/5 · ~20 min
#
# The paper's sweeps (over sparsity, importance, correlation) each need many small models. With a
# leading instances dimension they are one model, and one optimizer step updates them all. The loss
# to minimise is the *sum* of the instances' losses: instance `k`'s parameters get gradient only from
# instance `k`'s loss, so the models stay independent.
#
# Build `train_toy_model`. The number of instances and features comes from `importance` `[inst, feats]`.
# 1. `torch.manual_seed(seed)`, then initialise `W` `[inst, d_hidden, feats]` with
#    `torch.randn(...) * sqrt(2 / (d_hidden + feats))` (Xavier-normal for each instance's matrix) and
#    `b_final` `[inst, feats]` with zeros. Both need gradients.
# 2. Adam with learning rate `lr` on both.
# 3. For each of `steps` steps (wrap `range(steps)` in `tqdm` for a progress bar): draw
#    `x = sample_features(batch_size, feature_probability, correlation)`, compute the summed loss,
#    and take an optimizer step.
# 4. Return `(W, b_final)`, detached.
#
# You'll know it worked when, for 5 features in 2 dimensions, a dense instance keeps 2 orthogonal
# features and a very sparse one keeps all 5 (plotted below).
#
# <details><summary>Hint 1</summary>The parameters are leaf tensors that require gradients. Each step computes one scalar (the instances' losses added up), clears the old gradients, back-propagates and steps.</details>
# <details><summary>Hint 2</summary><code>requires_grad_()</code> and <code>torch.optim.Adam</code>; in the loop <code>sample_features</code>, your <code>toy_forward</code> and <code>importance_weighted_loss</code>, then <code>zero_grad</code>, <code>backward</code> and <code>step</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "train_toy_model", "locked": false, "schema_version": 3, "solution": true}
def train_toy_model(importance: Float[Tensor, "inst feats"], feature_probability: Float[Tensor, "inst feats"],
                    d_hidden: int, steps: int = 2000, batch_size: int = 512, lr: float = 1e-2, seed: int = 0,
                    correlation: str = "none") -> tuple[Float[Tensor, "inst d_hidden feats"], Float[Tensor, "inst feats"]]:
    """Train one toy model per instance (all at once) and return (W, b_final), detached."""
    ### BEGIN SOLUTION
    torch.manual_seed(seed)
    n_inst, n_feats = importance.shape
    W = (torch.randn(n_inst, d_hidden, n_feats) * (2 / (d_hidden + n_feats)) ** 0.5).requires_grad_()
    b_final = torch.zeros(n_inst, n_feats, requires_grad=True)
    opt = torch.optim.Adam([W, b_final], lr=lr)
    for _ in tqdm(range(steps), desc="toy models", mininterval=0.5):
        x = sample_features(batch_size, feature_probability, correlation)
        loss = importance_weighted_loss(toy_forward(W, b_final, x), x, importance).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W.detach(), b_final.detach()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_train_toy_model", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(train_toy_model)

# %% [markdown]
# Now the paper's first experiment: `n = 5` features, `m = 2` hidden dimensions, importance `0.9^i`,
# and 8 instances whose feature probability goes from 1 (dense) down to 0.02 (each feature present 2 % of
# the time). One run trains all eight.

# %%
N_FEATURES, D_HIDDEN, N_INST = 5, 2, 8
importance = (0.9 ** torch.arange(N_FEATURES))[None, :].expand(N_INST, N_FEATURES)
probability = (50 ** -torch.linspace(0, 1, N_INST))[:, None].expand(N_INST, N_FEATURES)
W, b_final = train_toy_model(importance, probability, D_HIDDEN, steps=2000, batch_size=512, lr=1e-2, seed=0)
titles = [f"1−S = {p:.3f}" for p in probability[:, 0].tolist()]
plot_features_2d(W, titles, title="Columns of W (one arrow per feature; blue is most important)")

# %% [markdown]
# What you should see, from left (dense) to right (sparse): in the dense instance the two most important
# features get orthogonal directions and the other three are dropped (length ≈ 0). This is what PCA
# would do. As features get sparser, four features appear as two *antipodal pairs* (each pair on one
# line, pointing opposite ways). At the sparsest settings all five sit on a regular pentagon. The model
# represents more features than it has dimensions. Section 2 measures this.
#
# ### Recap
# - The toy model compresses `n` sparse features into `m` dimensions and decodes them with `Wᵀ`, a bias and
#   a ReLU.
# - One tensor with an instances dimension trains a sweep of independent models in one loop.
# - Dense features with decaying importance are stored like PCA (the `m` most important, orthogonal).
#   Sparse features are stored in superposition, more than `m` of them.

# %% [markdown]
# ## 2. The geometry of superposition
#
# **Learning objectives**
# - Read `WᵀW`: its diagonal is each feature's squared norm, its off-diagonal entries are interference.
# - Measure superposition per feature, the angles between represented features, and antipodal pairs.
# - Compute *dimensions per feature* and *feature dimensionality* `D_i`, and see them stick at
#   simple fractions as sparsity grows (Elhage et al., section "The Geometry of Superposition").
#
# `WᵀW` (`[feats, feats]` for each instance) says everything about how the model reconstructs: feature
# `j` leaks `(WᵀW)_ij x_j` into the reconstruction of feature `i`. Orthogonal features give a diagonal
# matrix. Antipodal pairs give −1 entries, which the ReLU removes for free, since a feature is never
# negative. (In the heatmaps, as everywhere in the course, positive is red, negative blue and 0 white.)

# %%
gram = torch.einsum("khi,khj->kij", W, W)
show = [0, 2, N_INST - 1]
for k in show:
    plots.heatmap(gram[k], x_labels=range(N_FEATURES), y_labels=range(N_FEATURES), zmax=1.5,
                  title=f"WᵀW, instance {k} (1−S = {probability[k, 0]:.3f})", x_title="feature j",
                  y_title="feature i").show()

# %% [markdown]
# ## Exercise: superposition per feature
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# A feature is *in superposition* when other features have a component along its direction. The paper
# measures this for feature `i` as `Σ_{j≠i} (Ŵ_i · W_j)²`, where `Ŵ_i = W_i / ||W_i||` is the unit vector of
# feature `i` (section "Demonstrating Superposition", the bar plots). It is 0 for a feature with a
# dimension to itself, and about 1 for a feature with an antipodal partner of the same length.
#
# Build `superposition_per_feature`: from `W` `[inst, d_hidden, feats]`, return `[inst, feats]`. A feature
# with `W_i = 0` has no direction: return 0 for it, not NaN. You'll know it worked when two orthogonal
# features give 0 and an antipodal pair gives 1 for each.
#
# <details><summary>Hint 1</summary>Normalise the columns first, in a way that leaves a zero column at zero. Then you need every dot product <code>Ŵ_i · W_j</code> at once, without the <code>j = i</code> terms.</details>
# <details><summary>Hint 2</summary><code>clamp_min</code> on the norms, <code>torch.einsum</code> for all the dot products, and <code>diagonal</code> for the terms to leave out.</details>

# %% nbgrader={"grade": false, "grade_id": "superposition_per_feature", "locked": false, "schema_version": 3, "solution": true}
def superposition_per_feature(W: Float[Tensor, "inst d_hidden feats"]) -> Float[Tensor, "inst feats"]:
    """sum_{j != i} (W_hat_i . W_j)^2 for every feature i of every instance (0 for a zero column)."""
    ### BEGIN SOLUTION
    W_hat = W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)
    dots = torch.einsum("khi,khj->kij", W_hat, W) ** 2
    return dots.sum(-1) - dots.diagonal(dim1=1, dim2=2)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_superposition_per_feature", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(superposition_per_feature)

# %% [markdown]
# What you should see below: in the dense instance two features with bars of length 1 and no
# superposition (dark). In sparser instances more features get bars, and most of them turn yellow: they
# share their direction with other features (all five on the pentagon).

# %%
plot_feature_bars(W.norm(dim=1), superposition_per_feature(W), titles,
                  title="Feature norms ||W_i||, coloured by superposition")

# %% [markdown]
# ## Exercise: angles between represented features
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# In 2 dimensions the arrangement can be read from angles alone. Two orthogonal features are 90° apart,
# an antipodal pair 180°, five features on a pentagon 72° apart. We count a feature as *represented*
# when `||W_i|| > threshold`.
#
# Build `consecutive_angles`: from one instance's `W` `[2, feats]`, take the represented features,
# compute each one's angle `atan2(W[1, i], W[0, i])` in degrees, sort them, and return the gaps between
# neighbours going round the circle, *including* the gap from the last back to the first (so the gaps
# sum to 360). Return them in order, starting with the gap after the smallest angle. You'll know it
# worked when a pentagon gives five gaps of 72.
#
# <details><summary>Hint 1</summary>Keep the represented columns, turn each into an angle and sort them. The last gap runs from the largest angle round to the smallest one plus a full turn.</details>
# <details><summary>Hint 2</summary><code>torch.atan2</code> and <code>torch.rad2deg</code>, <code>sort</code>, then <code>torch.diff</code> after appending the first angle plus 360.</details>

# %% nbgrader={"grade": false, "grade_id": "consecutive_angles", "locked": false, "schema_version": 3, "solution": true}
def consecutive_angles(W: Float[Tensor, "2 feats"], threshold: float = 0.5) -> Float[Tensor, "n_represented"]:
    """Angular gaps (degrees) between consecutive represented features (||W_i|| > threshold), sorted by
    angle, wrapping round: they sum to 360 (a single feature gives [360.], none gives an empty tensor)."""
    ### BEGIN SOLUTION
    kept = W[:, W.norm(dim=0) > threshold]
    angles = torch.rad2deg(torch.atan2(kept[1], kept[0])).sort().values
    return torch.diff(torch.cat([angles, angles[:1] + 360]))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_consecutive_angles", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(consecutive_angles)

# %%
for k in range(N_INST):
    gaps = consecutive_angles(W[k])
    print(f"1−S = {probability[k, 0]:.3f}: {len(gaps)} features represented, gaps {[round(g) for g in gaps.tolist()]}")

# %% [markdown]
# ## Exercise: counting antipodal pairs
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# The first kind of superposition to appear as sparsity grows is the *antipodal pair*: two features on
# one line, in opposite directions. When only one of the two is present, the other's readout is
# negative, and the ReLU sets it to zero. So the pair costs almost nothing as long as the two are
# rarely active together (Elhage et al., "Demonstrating Superposition").
#
# Build `count_antipodal_pairs`: for each instance of `W` `[inst, d_hidden, feats]`, count the unordered
# pairs `i < j` of represented features (both norms `> threshold`) whose cosine similarity is below
# `cos_threshold`. Return `[inst]` integers. You'll know it worked when a square (two antipodal pairs)
# gives 2 and a pentagon gives 0 (its widest angle is 144°, cosine −0.81).
#
# <details><summary>Hint 1</summary>Compute the cosine of every pair of features (not the dot product: lengths must not matter), keep the pairs in which both features are represented, and count each unordered pair once.</details>
# <details><summary>Hint 2</summary><code>torch.einsum</code> on the normalised columns; <code>torch.triu(..., diagonal=1)</code> keeps each pair once.</details>

# %% nbgrader={"grade": false, "grade_id": "count_antipodal_pairs", "locked": false, "schema_version": 3, "solution": true}
def count_antipodal_pairs(W: Float[Tensor, "inst d_hidden feats"], threshold: float = 0.5,
                          cos_threshold: float = -0.9) -> Int[Tensor, "inst"]:
    """Number of pairs i < j with ||W_i||, ||W_j|| > threshold and cos(W_i, W_j) < cos_threshold."""
    ### BEGIN SOLUTION
    norms = W.norm(dim=1)
    W_hat = W / norms[:, None, :].clamp_min(1e-8)
    cos = torch.einsum("khi,khj->kij", W_hat, W_hat)
    represented = norms > threshold
    both = represented[:, :, None] & represented[:, None, :]
    pairs = torch.triu(both & (cos < cos_threshold), diagonal=1)
    return pairs.sum((1, 2))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_count_antipodal_pairs", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(count_antipodal_pairs)

# %%
print("represented features:", (W.norm(dim=1) > 0.5).sum(-1).tolist())
print("antipodal pairs:     ", count_antipodal_pairs(W).tolist())

# %% [markdown]
# What you should see: the dense instance represents 2 features and no pairs. In the middle of the sweep,
# 4 features form 2 antipodal pairs. The sparsest instances represent all 5 with no antipodal pair
# (the pentagon).
#
# ### How many dimensions does a feature get?
#
# With `n` and `m` large, arrows can no longer be drawn. The paper (section "The Geometry of
# Superposition", "Feature Dimensionality") uses two numbers instead. **Dimensions per feature** is
# `m / ||W||_F²`: `||W||_F² = Σ_i ||W_i||²` counts, roughly, how many features are represented (each with
# norm ≈ 1). **Feature dimensionality** measures the share of a dimension that feature `i` gets:
#
# `D_i = ||W_i||² / Σ_j (Ŵ_i · W_j)²`
#
# A feature alone in its dimension has `D_i = 1`, each member of an antipodal pair `1/2`, each of 5
# features on a pentagon in 2D `2/5`. In the paper's sweeps `D_i` sticks at a few such fractions (1, 3/4,
# 2/3, 1/2, 2/5, 3/8), one per polytope (tetrahedron, triangle, digon, pentagon, square antiprism).

# %% [markdown]
# ## Exercise: dimensions per feature
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# Build `dimensions_per_feature`: from `W` `[inst, d_hidden, feats]`, return `m / ||W||_F²` for each
# instance, `[inst]`, where `m = d_hidden` and `||W||_F²` is the sum of all squared entries of that
# instance's matrix. You'll know it worked when an identity matrix gives 1.
#
# <details><summary>Hint 1</summary><code>m</code> is the size of the hidden layer; <code>||W||_F²</code> adds up every squared entry of one instance's matrix.</details>
# <details><summary>Hint 2</summary><code>W.shape</code>, and <code>pow(2).sum</code> over the last two dimensions.</details>

# %% nbgrader={"grade": false, "grade_id": "dimensions_per_feature", "locked": false, "schema_version": 3, "solution": true}
def dimensions_per_feature(W: Float[Tensor, "inst d_hidden feats"]) -> Float[Tensor, "inst"]:
    """d_hidden / ||W||_F^2 for every instance."""
    ### BEGIN SOLUTION
    return W.shape[1] / W.pow(2).sum((1, 2))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_dimensions_per_feature", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(dimensions_per_feature)

# %% [markdown]
# ## Exercise: feature dimensionality
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# `D_i` is the fraction of a dimension feature `i` gets. The denominator counts every feature's
# component along `Ŵ_i`, *including feature i itself* (`j = i` gives `||W_i||²`). So `D_i ≤ 1`, and
# `Σ_i D_i ≤ m`: the features share out at most the `m` dimensions there are.
#
# Build `feature_dimensionality`: from `W` `[inst, d_hidden, feats]`, return `D` `[inst, feats]`. Return 0
# for a feature with `W_i = 0`. You'll know it worked when a pentagon gives 2/5 for every feature.
#
# <details><summary>Hint 1</summary>Reuse the <code>Ŵ_i · W_j</code> matrix from <code>superposition_per_feature</code>, this time keeping the diagonal.</details>
# <details><summary>Hint 2</summary>For a zero column both numerator and denominator are 0: <code>clamp_min</code> on the denominator.</details>

# %% nbgrader={"grade": false, "grade_id": "feature_dimensionality", "locked": false, "schema_version": 3, "solution": true}
def feature_dimensionality(W: Float[Tensor, "inst d_hidden feats"]) -> Float[Tensor, "inst feats"]:
    """D_i = ||W_i||^2 / sum_j (W_hat_i . W_j)^2 (the sum includes j = i); 0 for a zero column."""
    ### BEGIN SOLUTION
    W_hat = W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)
    denominator = (torch.einsum("khi,khj->kij", W_hat, W) ** 2).sum(-1)
    return W.pow(2).sum(1) / denominator.clamp_min(1e-12)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_feature_dimensionality", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(feature_dimensionality)

# %% [markdown]
# ### A sparsity sweep with more features
#
# Now a larger sweep: 24 features of equal importance in 4 dimensions, 16 instances from dense
# (`1 − S = 1`) to very sparse (`1 − S = 0.02`). One call trains them all.

# %%
SWEEP_FEATURES, SWEEP_HIDDEN, SWEEP_INST = 24, 4, 16
sweep_probability = (50 ** -torch.linspace(0, 1, SWEEP_INST))[:, None].expand(SWEEP_INST, SWEEP_FEATURES)
sweep_importance = torch.ones(SWEEP_INST, SWEEP_FEATURES)
W_sweep, _ = train_toy_model(sweep_importance, sweep_probability, SWEEP_HIDDEN, steps=2000, batch_size=256,
                             lr=1e-2, seed=0)
inverse_density = 1 / sweep_probability[:, 0]
fig = plots.lines(dimensions_per_feature(W_sweep), x=inverse_density, names=["m / ||W||_F²"],
                  title="Dimensions per feature", x_title="1 / (1 − S)", y_title="dimensions per feature")
fig.update_xaxes(type="log")
for level in (1, 1 / 2, 1 / 3):
    fig.add_hline(y=level, line_dash="dot", line_color="grey")
fig

# %%
dense_gram = W_sweep[0].T @ W_sweep[0]
print("dense instance: largest eigenvalues of WᵀW:", [round(v, 2) for v in torch.linalg.eigvalsh(dense_gram)[-6:].tolist()])
print("dense instance: feature norms ||W_i||:     ", sorted(round(v, 2) for v in W_sweep[0].norm(dim=0).tolist()))

# %% [markdown]
# What you should see: dimensions per feature starts at 1 and falls as features get sparser.
#
# At 1 it does not mean what it meant for the 5 features of section 1. There, importance decayed, and the
# dense model gave the 2 most important features a dimension each. Here all 24 features are equally
# important and independent, so no subspace of the feature space is better than another. As in PCA
# with equal variances, where every rank-4 projection does equally well, the dense model learns *some*
# rank-4 projection. `WᵀW` has 4 eigenvalues close to 1 and the rest close to 0 (printed above), so
# `||W||_F² = trace(WᵀW) = 4` and dimensions per feature is 1. But the 4 dimensions are smeared over
# most of the 24 features: every `||W_i||` is well below 1 (under 0.85), and no feature has a dimension of its own.
#
# As features get sparser the curve does not fall smoothly. It lingers near 1/2 (1/(1 − S) from about 2 to 3; the
# exact range varies a little from run to run: 8
# features in 4 antipodal pairs fill the 4 dimensions) and again near 1/3 (1/(1 − S) ≈ 5 to 6: 12
# features), then keeps dropping as more features squeeze in. The paper calls such plateaus "sticky".
#
# Below, each represented feature's `D_i` (features with `||W_i|| > 0.5`) is plotted against sparsity,
# with grey lines at 1, 3/4, 2/3, 1/2, 2/5 and 3/8.

# %%
D_sweep = feature_dimensionality(W_sweep)
represented = W_sweep.norm(dim=1) > 0.5
xs = inverse_density[:, None].expand_as(D_sweep)[represented]
# a small multiplicative jitter so that features with the same D_i stay visible
jitter = torch.exp(0.04 * torch.randn(xs.shape, generator=torch.Generator().manual_seed(0)))
fig = plots.scatter(xs * jitter, D_sweep[represented], title="Feature dimensionality D_i of represented features",
                    x_title="1 / (1 − S)", y_title="D_i")
fig.update_xaxes(type="log")
for level in (1, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8, 1 / 3):
    fig.add_hline(y=level, line_dash="dot", line_color="grey")
fig

# %% [markdown]
# What you should see: the points are not spread evenly between 0 and 1. At each sparsity they bunch
# at a few values, and the bunches move down in steps as sparsity grows. Two plateaus are clear:
# - **1/2**, at 1/(1 − S) from about 2 to about 3 (the edges move a little from run to run): 8 features,
#   4 antipodal pairs, one pair per dimension.
# - **1/3**, at 1/(1 − S) ≈ 5 to 6: 12 features. This fraction is not in the paper's list and not a
#   polytope of antipodal pairs (none of the 12 has one). The 12 features have norms close to 1 and
#   spread evenly over the 4 dimensions: `W Wᵀ = Σ_j W_j W_jᵀ` is close to `3·I` (a *tight frame*). Then
#   `Σ_j (Ŵ_i · W_j)² = Ŵ_iᵀ (W Wᵀ) Ŵ_i ≈ 3` for every feature, so `D_i ≈ 1/3 = 4/12`: the 4 dimensions
#   are shared equally by the 12 features.
#
# The dense instance's few points are scattered (its dimensions are smeared, see above). At the
# sparsest settings `D_i` is about 1/5 and the bunches are loose: with 4 hidden dimensions and 2000
# steps the arrangements are rougher than in the paper's larger runs. Compare where your points land.
#
# ### Recap
# - `WᵀW` shows interference: antipodal pairs are −1 entries, which the ReLU cancels for free.
# - As sparsity grows the model goes from 2 orthogonal features, to antipodal pairs, to a pentagon
#   (`n = 5`, `m = 2`).
# - Dimensions per feature and `D_i` measure this in any dimension, and both move in steps, not smoothly
#   (here plateaus at 1/2 and 1/3).
# - With equal importances a dense model keeps an arbitrary `m`-dimensional subspace, smeared over
#   many features; only with unequal importances does it keep "the `m` most important features".

# %% [markdown]
# ## 3. Superposition as a phase change
#
# **Learning objectives**
# - Lay out a 2-D sweep (importance × sparsity) as instances.
# - Classify each trained model: second feature not learned, dedicated dimension, or superposition.
# - Draw the phase diagram of Elhage et al. (section "Superposition as a Phase Change") for `n = 2`,
#   `m = 1`.
#
# The smallest model with a choice to make: 2 features, 1 dimension. Feature 0 has importance 1,
# feature 1 ("the extra feature") has relative importance `r`, and both have density `1 − S`. The model
# can ignore the extra feature, give it the one dimension (dropping feature 0), or store both, antipodally,
# in superposition. The paper finds sharp boundaries between these regimes, like the phases of water.

# %% [markdown]
# ## Exercise: lay out a phase diagram as instances
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# A grid of settings becomes one batch of instances. Build `phase_diagram_instances`: from
# `relative_importances` `[R]` and `densities` `[D]`, return `(importance, feature_probability)`, each
# `[R * D, 2]`. Instance `r * D + d` has importance `(1, relative_importances[r])` and both features with
# probability `densities[d]` (so importance is the outer loop and density the inner one, as
# `torch.meshgrid(..., indexing="ij")` and `.flatten()` give). You'll know it worked when
# `importance.reshape(R, D, 2)[r, d, 1]` is `relative_importances[r]`.
#
# <details><summary>Hint 1</summary>Build the <code>R × D</code> grid of (relative importance, density) pairs, then flatten it with importance as the slow index. Feature 0's importance is always 1.</details>
# <details><summary>Hint 2</summary><code>torch.meshgrid(..., indexing="ij")</code>, <code>flatten</code>, and <code>torch.stack</code> to make the two columns.</details>

# %% nbgrader={"grade": false, "grade_id": "phase_diagram_instances", "locked": false, "schema_version": 3, "solution": true}
def phase_diagram_instances(relative_importances: Float[Tensor, "R"], densities: Float[Tensor, "D"]
                            ) -> tuple[Float[Tensor, "inst 2"], Float[Tensor, "inst 2"]]:
    """(importance, feature_probability), with instance r * D + d <-> (relative_importances[r], densities[d])."""
    ### BEGIN SOLUTION
    rel, dens = torch.meshgrid(relative_importances, densities, indexing="ij")
    rel, dens = rel.flatten(), dens.flatten()
    return torch.stack([torch.ones_like(rel), rel], dim=-1), torch.stack([dens, dens], dim=-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_phase_diagram_instances", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(phase_diagram_instances)

# %% [markdown]
# ## Exercise: which phase is a model in?
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# Build `classify_phase`: from `W` `[inst, d_hidden, 2]` (here `d_hidden = 1`), return `[inst]` integers:
# - `0` if the extra feature (feature 1) is not represented: `||W_1|| ≤ threshold`;
# - `1` if it has the dimension to itself: `||W_1|| > threshold` and `||W_0|| ≤ threshold`;
# - `2` if both are represented (superposition).
#
# Use norms (`W[:, :, i].norm(dim=-1)`), not signed values: in superposition the two weights have opposite
# signs. You'll know it worked when `W = [[1, -1]]` gives 2.
#
# <details><summary>Hint 1</summary>Two norms per instance, then two questions in order: is feature 1 represented at all? If it is, is feature 0?</details>
# <details><summary>Hint 2</summary><code>norm(dim=1)</code> and a nested <code>torch.where</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "classify_phase", "locked": false, "schema_version": 3, "solution": true}
def classify_phase(W: Float[Tensor, "inst d_hidden 2"], threshold: float = 0.5) -> Int[Tensor, "inst"]:
    """0: feature 1 not represented; 1: only feature 1 represented (dedicated); 2: both (superposition)."""
    ### BEGIN SOLUTION
    norms = W.norm(dim=1)
    extra, first = norms[:, 1] > threshold, norms[:, 0] > threshold
    return torch.where(~extra, 0, torch.where(~first, 1, 2))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_classify_phase", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(classify_phase)

# %% [markdown]
# Now the phase diagram: 7 relative importances from 0.1 to 10, 7 densities from 1 to 0.03. Models this
# small often stop in a poor local minimum. Once a weight and its bias have switched a feature's
# output off, the feature gets no gradient. So we train every cell 4 times (4 copies of the grid, still
# one run) and keep the copy with the lowest loss on fresh data. This uses your `generate_batch`,
# `toy_forward` and `importance_weighted_loss`.

# %%
PHASE_GRID, PHASE_COPIES = 7, 4
relative_importances = 10 ** torch.linspace(-1, 1, PHASE_GRID)
densities = 10 ** torch.linspace(0, -1.5, PHASE_GRID)
phase_importance, phase_probability = phase_diagram_instances(relative_importances, densities)
copies_importance = phase_importance.repeat(PHASE_COPIES, 1)
copies_probability = phase_probability.repeat(PHASE_COPIES, 1)
W_phase, b_phase = train_toy_model(copies_importance, copies_probability, d_hidden=1, steps=2000, batch_size=256,
                                   lr=1e-2, seed=0)
with torch.no_grad():
    x_eval = generate_batch(20_000, copies_probability)
    eval_loss = importance_weighted_loss(toy_forward(W_phase, b_phase, x_eval), x_eval, copies_importance)
best_copy = eval_loss.reshape(PHASE_COPIES, -1).argmin(0)
W_best = W_phase.reshape(PHASE_COPIES, -1, 1, 2)[best_copy, torch.arange(PHASE_GRID ** 2)]
phases = classify_phase(W_best).reshape(PHASE_GRID, PHASE_GRID)
phase_colours = [[0, "#d9d9d9"], [1 / 3, "#d9d9d9"], [1 / 3, "#1f77b4"], [2 / 3, "#1f77b4"], [2 / 3, "#d62728"],
                 [1, "#d62728"]]
fig = plots.heatmap(phases.T.float(), x_labels=[f"{r:.2g}" for r in relative_importances.tolist()],
                    y_labels=[f"{d:.2g}" for d in densities.tolist()], diverging=False, zmin=-0.5, zmax=2.5,
                    color_continuous_scale=phase_colours, x_title="relative importance of feature 1",
                    y_title="feature density 1 − S",
                    title="Phase diagram, n = 2, m = 1 (grey: not learned · blue: dedicated · red: superposition)")
fig.update_coloraxes(showscale=False)
fig

# %% [markdown]
# What you should see: at the top (dense), the extra feature is ignored when it matters less than feature
# 0 (grey, left) and takes the dimension when it matters more (blue, right). There is no superposition
# there. At relative importance exactly 1 the two features are interchangeable, so either colour can
# appear. Going down (sparser), a red superposition region opens around relative importance 1 and widens
# until it covers the whole row, the shape of the paper's diagram. An isolated cell may disagree where
# all four copies stopped in a local minimum.
#
# ### Recap
# - A grid of settings is a batch of instances; `meshgrid` and `flatten` lay it out.
# - With 2 features and 1 dimension, the optimal solution jumps between three discrete arrangements as
#   importance and sparsity vary, and superposition wins only when features are sparse.

# %% [markdown]
# ## 4. Correlated and anticorrelated features
#
# **Learning objectives**
# - Generate pairs of features that always occur together (correlated) or never together
#   (anticorrelated).
# - Measure the angle between the two features of a pair, and see how correlation changes the geometry
#   (Elhage et al., "The Geometry of Superposition", non-uniform superposition).
#
# Superposition works because interfering features are rarely active together. Correlated features
# *are* active together, so superposing them costs more. Anticorrelated features never are, so they can
# share a line at no cost. Features `2k` and `2k + 1` form pair `k`.

# %% [markdown]
# ## Exercise: correlated feature pairs
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# Build `generate_correlated_batch`: from `pair_probability` `[inst, pairs]`, return `[batch, inst, 2 * pairs]`.
# Pair `k` of a sample is present with probability `pair_probability[:, k]`; if present, *both* features
# `2k` and `2k + 1` are nonzero, each with its own independent U[0, 1] value; otherwise both are 0.
# You'll know it worked when features `2k` and `2k + 1` are zero in exactly the same samples.
#
# <details><summary>Hint 1</summary>Draw one presence per pair and give it to both features of the pair; draw the values per feature.</details>
# <details><summary>Hint 2</summary><code>repeat_interleave</code> on the last dimension turns <code>[p0, p1]</code> into <code>[p0, p0, p1, p1]</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "generate_correlated_batch", "locked": false, "schema_version": 3, "solution": true}
def generate_correlated_batch(batch_size: int, pair_probability: Float[Tensor, "inst pairs"]
                              ) -> Float[Tensor, "batch inst feats"]:
    """Features 2k, 2k+1 are both present (independent U[0, 1] values) with prob pair_probability[:, k], else both 0."""
    ### BEGIN SOLUTION
    n_inst, n_pairs = pair_probability.shape
    present = (torch.rand(batch_size, n_inst, n_pairs) < pair_probability).repeat_interleave(2, dim=-1)
    return torch.where(present, torch.rand(batch_size, n_inst, 2 * n_pairs), 0.0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_generate_correlated_batch", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(generate_correlated_batch)

# %% [markdown]
# ## Exercise: anticorrelated feature pairs
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# Build `generate_anticorrelated_batch`: same shapes, but the two features of a pair are *never* present
# together, and each one is present with probability `pair_probability[:, k]` (at most 1/2). One way:
# the pair is active with probability `2p`, and an active pair shows either its first or its second
# feature, with equal chance. Values are U[0, 1]. You'll know it worked when no sample has both
# features of a pair nonzero, while each feature is still nonzero a fraction `p` of the time.
#
# <details><summary>Hint 1</summary>Two decisions per pair: is the pair active (probability <code>2p</code>), and if so, which of its two features shows (a fair coin)?</details>
# <details><summary>Hint 2</summary>Combine the two boolean draws with <code>&amp;</code> and <code>~</code>; <code>torch.stack(..., dim=-1)</code> then <code>flatten(-2)</code> puts the features in pair order.</details>

# %% nbgrader={"grade": false, "grade_id": "generate_anticorrelated_batch", "locked": false, "schema_version": 3, "solution": true}
def generate_anticorrelated_batch(batch_size: int, pair_probability: Float[Tensor, "inst pairs"]
                                  ) -> Float[Tensor, "batch inst feats"]:
    """Features 2k, 2k+1 are never both present; each is present with prob pair_probability[:, k] (<= 1/2)."""
    ### BEGIN SOLUTION
    n_inst, n_pairs = pair_probability.shape
    active = torch.rand(batch_size, n_inst, n_pairs) < 2 * pair_probability
    first = torch.rand(batch_size, n_inst, n_pairs) < 0.5
    present = torch.stack([active & first, active & ~first], dim=-1).flatten(-2)
    return torch.where(present, torch.rand(batch_size, n_inst, 2 * n_pairs), 0.0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_generate_anticorrelated_batch", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(generate_anticorrelated_batch)

# %% [markdown]
# ## Exercise: the angle within each pair
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# Build `pair_cosines`: from `W` `[inst, d_hidden, 2 * pairs]`, return the cosine similarity between
# columns `2k` and `2k + 1` for every pair, `[inst, pairs]` (0 where a column is zero). You'll know it
# worked when an antipodal pair gives −1 and an orthogonal pair 0.
#
# <details><summary>Hint 1</summary>Normalise the columns (leaving zero columns at zero), then pair column <code>2k</code> with column <code>2k + 1</code>.</details>
# <details><summary>Hint 2</summary>Strided slices <code>0::2</code> and <code>1::2</code> on the feature dimension, multiplied and summed over the hidden dimension.</details>

# %% nbgrader={"grade": false, "grade_id": "pair_cosines", "locked": false, "schema_version": 3, "solution": true}
def pair_cosines(W: Float[Tensor, "inst d_hidden feats"]) -> Float[Tensor, "inst pairs"]:
    """cos(W_{2k}, W_{2k+1}) for every pair k of every instance (0 if a column is zero)."""
    ### BEGIN SOLUTION
    W_hat = W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return (W_hat[:, :, 0::2] * W_hat[:, :, 1::2]).sum(1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_pair_cosines", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(pair_cosines)

# %% [markdown]
# Two runs of 4 features (2 pairs) in 2 dimensions, equal importance, at three densities: one with
# correlated pairs, one with anticorrelated pairs. Colours: pair 0 blue shades, pair 1 red shades.

# %%
CORR_DENSITIES = torch.tensor([0.3, 0.1, 0.03])
corr_probability = CORR_DENSITIES[:, None].expand(3, 4)
corr_importance = torch.ones(3, 4)
pair_colours = ["#1f77b4", "#9ecae1", "#d62728", "#fc9272"]
corr_titles = [f"1−S = {p:.2f}" for p in CORR_DENSITIES.tolist()]
W_corr, _ = train_toy_model(corr_importance, corr_probability, 2, steps=2000, batch_size=512, lr=1e-2, seed=0,
                            correlation="correlated")
W_anti, _ = train_toy_model(corr_importance, corr_probability, 2, steps=2000, batch_size=512, lr=1e-2, seed=0,
                            correlation="anticorrelated")
plot_features_2d(W_corr, corr_titles, colours=pair_colours, title="Correlated pairs").show()
plot_features_2d(W_anti, corr_titles, colours=pair_colours, title="Anticorrelated pairs").show()
print("within-pair cosines, correlated:    ", [[round(c, 2) for c in row] for row in pair_cosines(W_corr).tolist()])
print("within-pair cosines, anticorrelated:", [[round(c, 2) for c in row] for row in pair_cosines(W_anti).tolist()])

# %% [markdown]
# What you should see:
# - **Anticorrelated** pairs at the highest density (1 − S = 0.3) are antipodal (cosine −1), and the two
#   pairs take orthogonal lines. The two features of a pair never fire together, so sharing a line costs
#   nothing, while features of different pairs often do (each is present 30 % of the time).
# - **Anticorrelated** pairs at the lower densities (0.1 and 0.03) are *not* antipodal in this run: the
#   features of a pair are orthogonal (cosine ≈ 0) and each feature sits opposite a feature of the other
#   pair: a square of two antipodal pairs, with the partners swapped. The other square would be better:
#   with the same weights and the partners exchanged, the loss on anticorrelated data is close to 0,
#   while this one leaves a few percent of the loss of predicting 0. But the difference comes only from
#   the samples in which features of different pairs fire together, about `p²` of them (1 % at
#   `p = 0.1`, 0.1 % at 0.03), so it is small, and this run does not find the better square.
# - **Correlated** pairs at the lower densities are orthogonal within each pair (cosine ≈ 0), and the two
#   *pairs* sit opposite each other, each pair forming a small orthogonal basis. The model superposes
#   features that rarely co-occur (different pairs), not features that always do. At the highest
#   density there is not room for all four; the two features of each pair collapse onto one shared
#   direction (cosine 1), representing their sum, as the paper describes for correlated features with too
#   little room.
#
# ### Recap
# - Co-occurrence sets the cost of interference. Anticorrelated features share a line when features are
#   common enough for the saving to matter (here at density 0.3); correlated features take orthogonal
#   directions and share space only with features they rarely co-occur with, or merge into one direction
#   when there is no room.

# %% [markdown]
# ## 5. Computation in superposition
#
# **Learning objectives**
# - Build a model with a hidden ReLU layer, `h = ReLU(W₁ x)`, `y' = ReLU(W₂ h + b)`, and construct by
#   hand the exact solution for `y = |x|`.
# - Train it on sparse `x ∈ [−1, 1]` and measure how many features it computes with fewer neurons
#   than the exact solution needs.
#
# Everything so far only *stored* features. Elhage et al. (section "Computation in Superposition") ask
# whether a model can also *compute* with more features than it has neurons. The task: output `|x_i|` for
# every feature. Exactly, `|x| = ReLU(x) + ReLU(−x)`, which needs 2 neurons per feature. With fewer
# neurons than that, a dense model computes `d_mlp / 2` features exactly and drops the rest. A sparse
# model does better.

# %% [markdown]
# ## Exercise: the forward pass with a hidden ReLU layer
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Build `abs_model_forward`: from `W1` `[inst, d_mlp, feats]`, `W2` `[inst, feats, d_mlp]`, `b_final`
# `[inst, feats]` and `x` `[batch, inst, feats]`, return `y' = ReLU(W2 ReLU(W1 x) + b_final)`,
# `[batch, inst, feats]`. Unlike the toy model, `W1` and `W2` are separate matrices. You'll know it
# worked when a model with `W1 = [[1], [−1]]`, `W2 = [[1, 1]]` returns `|x|`.
#
# <details><summary>Hint 1</summary>Two linear maps, each followed by a ReLU; the bias goes in before the final ReLU.</details>
# <details><summary>Hint 2</summary><code>torch.einsum</code>, with the instance index shared, as in <code>toy_forward</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "abs_model_forward", "locked": false, "schema_version": 3, "solution": true}
def abs_model_forward(W1: Float[Tensor, "inst d_mlp feats"], W2: Float[Tensor, "inst feats d_mlp"],
                      b_final: Float[Tensor, "inst feats"], x: Float[Tensor, "batch inst feats"]
                      ) -> Float[Tensor, "batch inst feats"]:
    """y' = ReLU(W2 ReLU(W1 x) + b_final), computed separately for every instance."""
    ### BEGIN SOLUTION
    h = torch.relu(torch.einsum("knf,bkf->bkn", W1, x))
    return torch.relu(torch.einsum("kfn,bkn->bkf", W2, h) + b_final)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_abs_model_forward", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(abs_model_forward)

# %% [markdown]
# ## Exercise: compute |x| by hand
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# Knowing the exact solution tells us what a trained model falls short of. Build
# `abs_solution_weights`: for `n_features`, return `(W1, W2)` with `W1` `[2n, n]` and `W2` `[n, 2n]`
# (no instances dimension) such that `ReLU(W2 ReLU(W1 x))` is exactly `|x|` for every `x` (no bias
# needed). Give feature `i` one neuron for `ReLU(x_i)` and one for `ReLU(−x_i)`. You'll know it worked when
# the model is exact on dense inputs, with every feature nonzero at once.
#
# <details><summary>Hint 1</summary>Neuron <code>2i</code> reads <code>+x_i</code> and neuron <code>2i + 1</code> reads <code>−x_i</code>; output <code>i</code> adds those two neurons with weight +1 each.</details>
# <details><summary>Hint 2</summary><code>torch.eye</code> and <code>repeat_interleave</code> build both matrices; multiply <code>W1</code>'s rows by alternating signs.</details>

# %% nbgrader={"grade": false, "grade_id": "abs_solution_weights", "locked": false, "schema_version": 3, "solution": true}
def abs_solution_weights(n_features: int) -> tuple[Float[Tensor, "d_mlp feats"], Float[Tensor, "feats d_mlp"]]:
    """(W1, W2) with d_mlp = 2 * n_features such that ReLU(W2 ReLU(W1 x)) == |x|."""
    ### BEGIN SOLUTION
    signs = torch.tensor([1.0, -1.0]).repeat(n_features)
    W1 = torch.eye(n_features).repeat_interleave(2, dim=0) * signs[:, None]
    W2 = torch.eye(n_features).repeat_interleave(2, dim=1)
    return W1, W2
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_abs_solution_weights", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(abs_solution_weights)

# %% [markdown]
# ## Exercise: train the |x| models
# > Difficulty 3/5 · Importance 4/5 · ~15 min
#
# Build `train_abs_model`, the same loop as `train_toy_model` with three changes:
# - parameters `W1` `[inst, d_mlp, feats]`, initialised as `torch.randn(...) * sqrt(2 / (d_mlp + feats))`,
#   then `W2` `[inst, feats, d_mlp]`, initialised as the *absolute value* of the same (in that order,
#   after `torch.manual_seed(seed)`), and `b_final` zeros. Since `h ≥ 0`, an output whose `W2` row
#   started all negative would never fire and never get a gradient. Nonnegative `W2` avoids that;
#   the exact solution has `W2 ≥ 0` anyway;
# - signed data: `x = generate_batch(...)` times an independent random sign per entry
#   (`2 * torch.randint(0, 2, x.shape) - 1`), so present features are U[−1, 1];
# - the target is `|x|`: the loss is `importance_weighted_loss(abs_model_forward(...), x.abs(), importance)`,
#   summed over instances.
#
# Return `(W1, W2, b_final)`, detached. You'll know it worked when a dense model with 2 neurons computes
# `|x_0|` for the most important feature almost exactly.
#
# <details><summary>Hint 1</summary>Copy your <code>train_toy_model</code> and change the parameters, the data and the target.</details>
# <details><summary>Hint 2</summary><code>Tensor.abs()</code> for <code>W2</code>'s initialisation and for the target; <code>torch.randint</code> for the signs.</details>

# %% nbgrader={"grade": false, "grade_id": "train_abs_model", "locked": false, "schema_version": 3, "solution": true}
def train_abs_model(importance: Float[Tensor, "inst feats"], feature_probability: Float[Tensor, "inst feats"],
                    d_mlp: int, steps: int = 3000, batch_size: int = 256, lr: float = 3e-3, seed: int = 0
                    ) -> tuple[Float[Tensor, "inst d_mlp feats"], Float[Tensor, "inst feats d_mlp"], Float[Tensor, "inst feats"]]:
    """Train one |x| model per instance on sparse signed features; return (W1, W2, b_final), detached."""
    ### BEGIN SOLUTION
    torch.manual_seed(seed)
    n_inst, n_feats = importance.shape
    scale = (2 / (d_mlp + n_feats)) ** 0.5
    W1 = (torch.randn(n_inst, d_mlp, n_feats) * scale).requires_grad_()
    W2 = (torch.randn(n_inst, n_feats, d_mlp) * scale).abs().requires_grad_()
    b_final = torch.zeros(n_inst, n_feats, requires_grad=True)
    opt = torch.optim.Adam([W1, W2, b_final], lr=lr)
    for _ in tqdm(range(steps), desc="|x| models", mininterval=0.5):
        x = generate_batch(batch_size, feature_probability)
        x = x * (2 * torch.randint(0, 2, x.shape) - 1)
        loss = importance_weighted_loss(abs_model_forward(W1, W2, b_final, x), x.abs(), importance).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W1.detach(), W2.detach(), b_final.detach()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_train_abs_model", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(train_abs_model)

# %% [markdown]
# ## Exercise: how much of each feature is computed?
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# To count computed features we need a per-feature score. Build `explained_variance`: from `target` and
# `prediction` `[batch, inst, feats]`, return `1 − mean((target − prediction)²) / var(target)` per instance
# and feature, `[inst, feats]`, with the mean and the (population, `unbiased=False`) variance taken over
# the batch. A perfect prediction scores 1; predicting the mean scores 0. You'll know it worked when
# `prediction = target` gives 1 everywhere.
#
# <details><summary>Hint 1</summary>The mean squared error and the variance are both taken over the batch axis, separately for each instance and feature.</details>
# <details><summary>Hint 2</summary><code>Tensor.var</code> with <code>unbiased=False</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "explained_variance", "locked": false, "schema_version": 3, "solution": true}
def explained_variance(target: Float[Tensor, "batch inst feats"], prediction: Float[Tensor, "batch inst feats"]
                       ) -> Float[Tensor, "inst feats"]:
    """1 - mean_b (target - prediction)^2 / var_b(target), per instance and feature."""
    ### BEGIN SOLUTION
    return 1 - (target - prediction).pow(2).mean(0) / target.var(0, unbiased=False)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_explained_variance", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(explained_variance)

# %% [markdown]
# Now 20 features with importance `0.8^i` and only 10 neurons (the exact solution needs 40), at five
# densities. The sum of the explained variances, clipped at 0, counts how many features' worth the
# model computes.

# %%
ABS_FEATURES, ABS_NEURONS = 20, 10
ABS_DENSITIES = torch.tensor([1.0, 0.3, 0.1, 0.03, 0.01])
abs_importance = (0.8 ** torch.arange(ABS_FEATURES))[None, :].expand(5, ABS_FEATURES)
abs_probability = ABS_DENSITIES[:, None].expand(5, ABS_FEATURES)
W1_abs, W2_abs, b_abs = train_abs_model(abs_importance, abs_probability, ABS_NEURONS, steps=3000, batch_size=256,
                                        lr=3e-3, seed=0)
with torch.no_grad():
    x_eval = generate_batch(50_000, abs_probability)
    x_eval = x_eval * (2 * torch.randint(0, 2, x_eval.shape) - 1)
    ev = explained_variance(x_eval.abs(), abs_model_forward(W1_abs, W2_abs, b_abs, x_eval))
computed = ev.clamp(min=0).sum(-1)
for p, c in zip(ABS_DENSITIES.tolist(), computed.tolist()):
    print(f"1−S = {p:<4.2f}: {c:5.2f} features' worth computed with {ABS_NEURONS} neurons")

# %%
for k in (0, 4):
    plots.heatmap(W1_abs[k], x_labels=range(ABS_FEATURES), y_labels=range(ABS_NEURONS), x_title="feature",
                  y_title="neuron", title=f"W₁ (what each neuron reads), 1−S = {ABS_DENSITIES[k]:.2f}").show()

# %% [markdown]
# What you should see: the dense model computes `d_mlp / 2 = 5` features. Each of those features has one
# neuron reading `+x_i` and one reading `−x_i`, the monosemantic solution you built by hand, and every
# other feature is dropped. The models with density 0.1 or less compute more than 5 features' worth with
# the same 10 neurons. In their `W₁` a neuron reads several features at once (it is *polysemantic*).
# Some features are computed for one sign only: the model outputs about `|x_i|` when `x_i` has one sign
# and about 0 when it has the other, so it computes `ReLU(x_i)` or `ReLU(−x_i)`, half of `|x_i|`
# (explained variance near 1/2; print `ev` to see).
#
# ### Recap
# - `|x|` needs 2 ReLU neurons per feature. With dense inputs a model computes `d_mlp / 2` features
#   exactly, one monosemantic neuron each.
# - With sparse inputs, the same neurons compute more features, approximately, by being polysemantic.
#   Superposition happens in computation too, not only in storage.

# %% [markdown]
# ## 6. Recovering features with a sparse autoencoder
#
# **Learning objectives**
# - Write a sparse autoencoder (SAE) as in Bricken et al. (2023): a ReLU encoder, a
#   decoder with unit-norm columns, and an L1 penalty on the latents.
# - Detect latents that never fire ("dead") and resample them.
# - Check that the SAE finds the toy model's true feature directions, without being told them.
#
# In the toy model we know the features: the columns of `W`. In a real model we don't. An SAE is trained
# only on hidden activations `h`, to rewrite each `h` as a *sparse*, nonnegative combination of learned
# directions (the decoder's columns). If the activations really are sparse sums of feature directions
# in superposition, the decoder's columns should line up with those directions. We test this on the
# pentagon: 5 features in 2 dimensions.
#
# Shapes follow the paper's math: `h` is `[batch, d_in]`, `W_enc` `[d_sae, d_in]`, `b_enc` `[d_sae]`,
# `W_dec` `[d_in, d_sae]` (column `j` is latent `j`'s direction), `b_dec` `[d_in]`.

# %% [markdown]
# ## Exercise: the SAE forward pass
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# The encoder subtracts the decoder bias first (it centres the input), then
# `f = ReLU(W_enc (h − b_dec) + b_enc)` gives the latents, and `ĥ = W_dec f + b_dec` the reconstruction.
# Build `sae_forward`, returning `(latents [batch, d_sae], h_hat [batch, d_in])`. You'll know it worked
# when an input equal to `b_dec` gives latents `ReLU(b_enc)`.
#
# <details><summary>Hint 1</summary>Centre by <code>b_dec</code> before encoding; decode with the decoder's columns and add <code>b_dec</code> back. <code>h</code> is <code>[batch, d_in]</code>: mind which side each matrix goes on.</details>
# <details><summary>Hint 2</summary>Matrix products (<code>@</code>) with the transposed weights, and <code>torch.relu</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "sae_forward", "locked": false, "schema_version": 3, "solution": true}
def sae_forward(h: Float[Tensor, "batch d_in"], W_enc: Float[Tensor, "d_sae d_in"], b_enc: Float[Tensor, "d_sae"],
                W_dec: Float[Tensor, "d_in d_sae"], b_dec: Float[Tensor, "d_in"]
                ) -> tuple[Float[Tensor, "batch d_sae"], Float[Tensor, "batch d_in"]]:
    """latents = ReLU(W_enc (h - b_dec) + b_enc); h_hat = W_dec latents + b_dec."""
    ### BEGIN SOLUTION
    latents = torch.relu((h - b_dec) @ W_enc.T + b_enc)
    return latents, latents @ W_dec.T + b_dec
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_sae_forward", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(sae_forward)

# %% [markdown]
# ## Exercise: the SAE loss
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# Reconstruction and sparsity pull against each other. The squared error wants every latent used, the L1
# penalty `λ Σ_j |f_j|` wants as few as possible. Build `sae_loss`: return the scalar
# `mean_b ||h − ĥ||² + l1_coeff · mean_b ||f||₁` (squared error summed over `d_in`, L1 summed over
# latents, both averaged over the batch). You'll know it worked when a perfect reconstruction with no
# active latents gives 0.
#
# <details><summary>Hint 1</summary>Sum each term over its own feature axis first, then average over the batch.</details>
# <details><summary>Hint 2</summary><code>pow(2)</code>, <code>abs()</code>, <code>sum(-1)</code> and <code>mean()</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "sae_loss", "locked": false, "schema_version": 3, "solution": true}
def sae_loss(h: Float[Tensor, "batch d_in"], h_hat: Float[Tensor, "batch d_in"], latents: Float[Tensor, "batch d_sae"],
             l1_coeff: float) -> Float[Tensor, ""]:
    """mean over the batch of ||h - h_hat||^2 + l1_coeff * ||latents||_1 (a scalar)."""
    ### BEGIN SOLUTION
    return (h_hat - h).pow(2).sum(-1).mean() + l1_coeff * latents.abs().sum(-1).mean()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_sae_loss", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(sae_loss)

# %% [markdown]
# ## Exercise: dead latents
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# With an L1 penalty, a latent that stops firing gets no gradient from the reconstruction and may never
# fire again: a *dead* latent, wasted capacity. Bricken et al. bring dead latents back by resampling
# them (next exercise). First, detect them. Build `dead_latents`: from `latents` `[batch, d_sae]`, return
# a boolean `[d_sae]`, True for latents that are 0 on every sample of the batch. You'll know it worked
# when a latent that fires once in the batch is not dead.
#
# <details><summary>Hint 1</summary>A latent is alive if it is positive on at least one sample.</details>
# <details><summary>Hint 2</summary><code>Tensor.any</code> over the batch dimension, then negate with <code>~</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "dead_latents", "locked": false, "schema_version": 3, "solution": true}
def dead_latents(latents: Float[Tensor, "batch d_sae"]) -> Bool[Tensor, "d_sae"]:
    """True for every latent that is 0 on all samples of the batch."""
    ### BEGIN SOLUTION
    return ~(latents > 0).any(0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_dead_latents", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(dead_latents)

# %% [markdown]
# ## Exercise: resample dead latents
# > Difficulty 3/5 · Importance 3/5 · ~20 min
#
# Bricken et al. (2023) restart a dead latent (a dead "neuron" of the autoencoder, in their words) where the
# SAE does worst. Their recipe: compute the loss on a large random sample of inputs; for each dead
# neuron, draw one input with probability proportional to the square of its loss; set the neuron's
# decoder vector to that *input*, normalised to unit length, and its encoder vector to the same input
# scaled to 0.2 times the mean norm of the alive neurons' encoder vectors, with encoder bias 0; then
# reset Adam's state for the parameters that changed.
#
# This exercise keeps the 0.2 scale and the zero bias but changes two things. It is deterministic: the
# dead latents get the batch's worst-reconstructed samples in order (`topk`) instead of a random draw.
# And it points a latent at the sample's *residual* `h − ĥ`, the part of the input the SAE currently
# misses, not at the input itself (the two coincide only where no latent fires and `b_dec = 0`).
# (`train_sae` also restarts Adam for all parameters, not only the changed ones.)
#
# Build `resample_dead_latents(h, W_enc, b_enc, W_dec, b_dec, dead)`:
# 1. Run the SAE on the batch `h`. The residual is `h − ĥ` and each sample's loss is `||h − ĥ||²`.
# 2. Take the `n_dead` samples with the largest loss (`torch.topk`, in decreasing order). The `k`-th dead
#    latent (in index order) gets the `k`-th of them. Its direction `d` is that sample's residual
#    divided by its norm.
# 3. For each dead latent `j`: decoder column `W_dec[:, j] = d`; encoder row
#    `W_enc[j] = 0.2 · a · d`, where `a` is the mean norm of the *alive* latents' encoder rows (1.0 if
#    none is alive); `b_enc[j] = 0`.
# 4. Leave alive latents and `b_dec` unchanged. Return new tensors `(W_enc, b_enc, W_dec, b_dec)`; do not
#    modify the inputs.
#
# You'll know it worked when the new decoder columns are unit vectors along the worst residuals and
# nothing else changed.
#
# <details><summary>Hint 1</summary>Work on copies, without autograd. Compute each sample's loss, pick the worst samples (one per dead latent), and write only into the dead latents' rows and columns.</details>
# <details><summary>Hint 2</summary><code>torch.no_grad()</code>, <code>clone()</code>, <code>topk</code> for the worst samples, and assignment through a boolean mask (<code>W_dec[:, dead] = ...</code>).</details>

# %% nbgrader={"grade": false, "grade_id": "resample_dead_latents", "locked": false, "schema_version": 3, "solution": true}
def resample_dead_latents(h: Float[Tensor, "batch d_in"], W_enc: Float[Tensor, "d_sae d_in"], b_enc: Float[Tensor, "d_sae"],
                          W_dec: Float[Tensor, "d_in d_sae"], b_dec: Float[Tensor, "d_in"], dead: Bool[Tensor, "d_sae"]
                          ) -> tuple[Float[Tensor, "d_sae d_in"], Float[Tensor, "d_sae"], Float[Tensor, "d_in d_sae"], Float[Tensor, "d_in"]]:
    """New (W_enc, b_enc, W_dec, b_dec) with every dead latent pointed at the residual of one of the
    worst-reconstructed samples of h (see the exercise text); alive latents unchanged."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        W_enc, b_enc, W_dec, b_dec = (t.detach().clone() for t in (W_enc, b_enc, W_dec, b_dec))
        n_dead = int(dead.sum())
        if n_dead == 0:
            return W_enc, b_enc, W_dec, b_dec
        _, h_hat = sae_forward(h, W_enc, b_enc, W_dec, b_dec)
        residual = h - h_hat
        worst = residual.pow(2).sum(-1).topk(n_dead).indices
        directions = residual[worst] / residual[worst].norm(dim=-1, keepdim=True).clamp_min(1e-8)
        alive_norm = W_enc[~dead].norm(dim=-1).mean() if (~dead).any() else torch.tensor(1.0)
        W_dec[:, dead] = directions.T
        W_enc[dead] = 0.2 * alive_norm * directions
        b_enc[dead] = 0.0
    return W_enc, b_enc, W_dec, b_dec
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_resample_dead_latents", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(resample_dead_latents)

# %% [markdown]
# ## Exercise: train the SAE
# > Difficulty 3/5 · Importance 5/5 · ~20 min
#
# Put it together. Build `train_sae(h_data, d_sae, l1_coeff, steps, batch_size, lr, resample_every, seed)`:
# 1. `torch.manual_seed(seed)`. Initialise `W_dec = torch.randn(d_in, d_sae)` with each column divided by
#    its norm, `W_enc = W_dec.T.clone()`, `b_enc` and `b_dec` zeros. All four need gradients; Adam with `lr`.
# 2. Each step: a batch of `batch_size` random rows of `h_data` (`torch.randint`), `sae_forward`,
#    `sae_loss`, an optimizer step, then renormalise every decoder column to unit norm (in
#    `torch.no_grad()`). Without that, the model could shrink the latents and grow the decoder to dodge
#    the L1 penalty.
# 3. Keep track of which latents fired in the current window of `resample_every` steps (a latent is dead
#    in the window if `dead_latents` is True on every batch of it). At the end of each window
#    (`(step + 1) % resample_every == 0`) in the *first half* of training (`step + 1 <= steps // 2`),
#    call `resample_dead_latents` on the current batch for the latents dead in the window, replace the
#    parameters (as fresh leaf tensors that require gradients), and restart Adam, since its moment
#    estimates are stale. Start a new window after every window end. (Bricken et al. resample at four
#    fixed steps, each time the neurons that did not fire in the preceding 12,500 steps.)
# 4. Return `(W_enc, b_enc, W_dec, b_dec, n_resampled)`, detached, where `n_resampled` is the total number
#    of latents resampled (an `int`).
#
# You'll know it worked when the decoder columns line up with the toy model's features (next exercise).
#
# <details><summary>Hint 1</summary>Keep one boolean per latent for the current window: it starts True and turns False as soon as the latent fires on a batch. Pass exactly those still True to <code>resample_dead_latents</code>.</details>
# <details><summary>Hint 2</summary><code>&amp;=</code> with your <code>dead_latents</code> every step; after resampling, fresh leaves with <code>clone().requires_grad_()</code> and a new <code>torch.optim.Adam</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "train_sae", "locked": false, "schema_version": 3, "solution": true}
def train_sae(h_data: Float[Tensor, "n_samples d_in"], d_sae: int, l1_coeff: float = 0.3, steps: int = 2000,
              batch_size: int = 256, lr: float = 3e-2, resample_every: int = 100, seed: int = 0
              ) -> tuple[Float[Tensor, "d_sae d_in"], Float[Tensor, "d_sae"], Float[Tensor, "d_in d_sae"], Float[Tensor, "d_in"], int]:
    """Train an SAE on the rows of h_data; return (W_enc, b_enc, W_dec, b_dec, n_resampled), detached."""
    ### BEGIN SOLUTION
    torch.manual_seed(seed)
    d_in = h_data.shape[1]
    W_dec = torch.randn(d_in, d_sae)
    W_dec = W_dec / W_dec.norm(dim=0, keepdim=True)
    params = [W_dec.T.clone(), torch.zeros(d_sae), W_dec, torch.zeros(d_in)]
    params = [t.clone().requires_grad_() for t in params]
    opt = torch.optim.Adam(params, lr=lr)
    dead_in_window = torch.ones(d_sae, dtype=torch.bool)
    n_resampled = 0
    for step in tqdm(range(steps), desc="SAE", mininterval=0.5):
        h = h_data[torch.randint(0, h_data.shape[0], (batch_size,))]
        latents, h_hat = sae_forward(h, *params)
        loss = sae_loss(h, h_hat, latents, l1_coeff)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            params[2] /= params[2].norm(dim=0, keepdim=True)
        dead_in_window &= dead_latents(latents.detach())
        if (step + 1) % resample_every == 0:
            if step + 1 <= steps // 2 and dead_in_window.any():
                new = resample_dead_latents(h, *params, dead_in_window)
                params = [t.clone().requires_grad_() for t in new]
                opt = torch.optim.Adam(params, lr=lr)
                n_resampled += int(dead_in_window.sum())
            dead_in_window = torch.ones(d_sae, dtype=torch.bool)
    W_enc, b_enc, W_dec, b_dec = (t.detach() for t in params)
    return W_enc, b_enc, W_dec, b_dec, n_resampled
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_train_sae", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(train_sae)

# %% [markdown]
# ## Exercise: does the SAE recover the true features?
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# Build `feature_recovery`: from `W_dec` `[d_in, d_sae]` and the true feature directions `W_features`
# `[d_in, feats]` (one toy instance's `W`), return for each true feature the highest cosine similarity
# between its direction and any decoder column, `[feats]`. Use signed cosines (a latent pointing the
# opposite way fires on the opposite inputs and is not a match). You'll know it worked when `W_dec` equal
# to `W_features` (with extra columns) gives 1 for every feature.
#
# <details><summary>Hint 1</summary>Normalise both sets of columns; you need every (true feature, latent) cosine, then the best latent for each true feature.</details>
# <details><summary>Hint 2</summary>One matrix product of the normalised matrices (<code>[feats, d_sae]</code>), then <code>max(dim=1)</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "feature_recovery", "locked": false, "schema_version": 3, "solution": true}
def feature_recovery(W_dec: Float[Tensor, "d_in d_sae"], W_features: Float[Tensor, "d_in feats"]) -> Float[Tensor, "feats"]:
    """For every true feature, max over latents of cos(W_features[:, i], W_dec[:, j])."""
    ### BEGIN SOLUTION
    dec = W_dec / W_dec.norm(dim=0, keepdim=True).clamp_min(1e-8)
    feats = W_features / W_features.norm(dim=0, keepdim=True).clamp_min(1e-8)
    return (feats.T @ dec).max(dim=1).values
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_feature_recovery", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(feature_recovery)

# %% [markdown]
# Now the real test. Take the sparsest toy model from section 1 (the pentagon) and record its hidden
# activations `h = W x` on 20 000 fresh inputs at feature probability 0.05. Then train an SAE with 10 latents,
# twice as many as there are features, on those activations alone.

# %%
SAE_LATENTS, SAE_PROBABILITY = 10, 0.05
W_toy = W[-1]  # [2, 5]: the pentagon
torch.manual_seed(0)
x_sae = generate_batch(20_000, torch.full((1, N_FEATURES), SAE_PROBABILITY))[:, 0]
h_sae = x_sae @ W_toy.T
W_enc, b_enc, W_dec, b_dec, n_resampled = train_sae(h_sae, SAE_LATENTS, l1_coeff=0.3, steps=2000, batch_size=256,
                                                    lr=3e-2, resample_every=100, seed=0)
latents, h_hat = sae_forward(h_sae, W_enc, b_enc, W_dec, b_dec)
alive = ~dead_latents(latents)
print(f"latents resampled during training: {n_resampled}; alive at the end: {int(alive.sum())} of {SAE_LATENTS}")
print(f"fraction of variance of h unexplained: {float((h_sae - h_hat).pow(2).sum() / (h_sae - h_sae.mean(0)).pow(2).sum()):.3f}")
print(f"mean number of active latents per input: {float((latents > 0).float().sum(-1).mean()):.2f} "
      f"(true features per input: {float((x_sae > 0).float().sum(-1).mean()):.2f})")
print("best cosine similarity per true feature:", [round(c, 3) for c in feature_recovery(W_dec, W_toy).tolist()])
cos_alive = ((W_toy / W_toy.norm(dim=0)).T @ W_dec)[:, alive]  # [true feature, alive latent]
print("alive latents per true feature (cosine > 0.9):", (cos_alive > 0.9).sum(1).tolist())
one_feature = (x_sae > 0).sum(-1) == 1
print("latents active on inputs with exactly one true feature:", round(float((latents[one_feature] > 0).float().sum(-1).mean()), 2))

# %%
both = torch.cat([W_toy, W_dec[:, alive] * W_toy.norm(dim=0).mean()], dim=1)[None]
colours = [FEATURE_COLOURS[i] for i in range(N_FEATURES)] + ["#000000"] * int(alive.sum())
names = [f"feature {i}" for i in range(N_FEATURES)] + [f"latent {j}" for j in alive.nonzero()[:, 0].tolist()]
plot_features_2d(both, ["true features (colours) and alive SAE decoder directions (black)"], colours=colours,
                 names=names)

# %%
cos = (W_toy / W_toy.norm(dim=0)).T @ W_dec
plots.heatmap(cos, x_labels=[f"{j}{'' if alive[j] else ' (dead)'}" for j in range(SAE_LATENTS)],
              y_labels=range(N_FEATURES), zmax=1, x_title="SAE latent", y_title="true feature",
              title="Cosine similarity: true feature directions vs SAE decoder columns")

# %% [markdown]
# What you should see: every true feature has a decoder column with cosine similarity ≥ 0.9. In the 2-D
# plot each coloured arrow has a black arrow on top of it, and in the heatmap (positive red, negative
# blue, 0 white) each row has a deep-red cell. Some latents died and were resampled in the first half of
# training. Latents still dead at the end are spare capacity: the SAE has 10 latents for 5 features.
#
# Look at the alive latents more closely: all of them, or all but one, point at a true feature (cosine above
# 0.9), and some features have *two*, so more latents are alive than there are features (how many features
# get a second latent changes with the smallest numerical differences in training; the printout gives yours). On most inputs
# with a single true feature (about three in four), both copies fire. (Other latents also fire off-target now
# and then, so the number of active latents per input is not a count of duplicates.) Nothing in the loss removes such duplicates. If two latents share a decoder
# direction, the reconstruction depends only on the sum of their activations, and so does the L1 penalty
# (the activations are nonnegative, so `|a| + |b| = a + b`): splitting a feature between two copies costs
# exactly what one latent costs. So the number of alive latents overcounts the features: an analysis
# should look for latents with (nearly) the same decoder direction before counting features.
#
# Nobody told the SAE about the features. It found the pentagon from 2-D activations in which every
# direction carries several features. This is how Bricken et al. pull interpretable features out of
# a transformer MLP layer whose neurons are polysemantic.
#
# ### Recap
# - An SAE rewrites activations as sparse nonnegative combinations of unit-norm decoder directions; the
#   L1 penalty trades reconstruction for sparsity.
# - Dead latents waste capacity; resampling them towards badly reconstructed inputs brings them back.
# - On a toy model in superposition the SAE's decoder directions match the true feature directions;
#   spare latents die or duplicate a feature (the L1 penalty cannot tell one latent from two copies).

# %% [markdown]
# ## Summary
#
# - Sparse features let a ReLU model store more features than dimensions, in superposition. It pays
#   for this with interference, which the ReLU and bias filter out.
# - The arrangement is geometric and discrete: orthogonal features, antipodal pairs, pentagons, with
#   dimensions per feature and `D_i` sticking at simple fractions, and sharp phase boundaries.
# - Correlation matters: anticorrelated features share lines; correlated ones take orthogonal directions.
# - Models compute in superposition too, with polysemantic neurons.
# - A sparse autoencoder can recover the features of a model in superposition from its activations alone.
#
# **Bonus (not graded).** Train the phase diagram for `n = 3`, `m = 2`. Add the paper's sign-symmetric
# variant (features in [−1, 1]) to the storage model and compare the geometry. Give the SAE 5 latents
# instead of 10, or turn resampling off (`resample_every > steps`), and watch feature recovery.
