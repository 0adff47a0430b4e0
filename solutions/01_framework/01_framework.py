# %% [markdown]
# # Chapter 1 · The mathematical framework of transformer circuits
#
# This chapter follows Elhage et al. (2021), *A Mathematical Framework for Transformer Circuits*
# (<https://transformer-circuits.pub/2021/framework/index.html>). The paper studies attention-only
# transformers with zero, one and two layers and shows that their weights can be read: a zero-layer model
# is a table of bigram statistics, a one-layer model adds "skip-trigrams", and a two-layer model can build
# **induction heads** out of two heads that compose.
#
# You will work on `attn_only_2l`, a 2-layer attention-only transformer that ships with the course
# (d_model 64, 4 heads of size 16 per layer, LayerNorm, a byte-level BPE vocabulary of 1024 tokens). It was
# trained on English text (Debian's `fortunes`) and on text in which a random span of tokens repeats, so it
# had every reason to learn to copy what came before.
#
# **Part 1 · Build it.** You re-implement the model's forward pass from its weight matrices, one piece at
# a time, until your logits match TransformerLens's.
#
# **Part 2 · Read it.** You take the weights apart the way the paper does: the direct path, the residual
# stream as a sum of paths, QK and OV circuits, the copying score, and composition between heads. By the
# end you will have found the previous-token head and the induction heads, and shown from the weights
# alone how they are wired together.
#
# Conventions. TransformerLens multiplies **row** vectors from the left: a head reads `x @ W_Q`, and the
# unembedding is `x @ W_U`. The paper writes column vectors, so its `W_U W_OV W_E` is our
# `W_E @ W_V @ W_O @ W_U`, read "source token → output logits". Shapes are written with
# [jaxtyping](https://docs.kidger.site/jaxtyping/) names; TransformerLens stores per-head weights as
# `W_Q[layer, head]` of shape `[d_model, d_head]`.
#
# Every exercise has a visible check (`check(fn)`) that runs in the notebook; graders run more checks.

# %%
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import FactoredMatrix

import micourse.models
import micourse.plots as plots
import micourse.vis as vis
from micourse.checks import check

# %%
torch.set_grad_enabled(False)  # we only read the model in this chapter: no gradients needed
model = micourse.models.load_model("attn_only_2l")
tokenizer = model.tokenizer
cfg = model.cfg
print(f"n_layers={cfg.n_layers}, n_heads={cfg.n_heads}, d_model={cfg.d_model}, d_head={cfg.d_head}, "
      f"d_vocab={cfg.d_vocab}, n_ctx={cfg.n_ctx}, normalization={cfg.normalization_type}")

# %% [markdown]
# The weights, under the names TransformerLens 2.x used (and the paper's notation suggests). The model is
# attention-only; TransformerLens lists placeholder MLP weights for it, which we drop.

# %%
params = {name: p.detach() for name, p in model.tl_parameters().items() if ".mlp." not in name}
for name, p in params.items():
    if name.startswith(("embed", "pos_embed", "blocks.0", "ln_final", "unembed")):
        print(f"{name:22s} {tuple(p.shape)}")

# %% [markdown]
# Two batches we use throughout: held-out English text (shipped with the model), and **repeated random
# tokens**: a beginning-of-sequence token, then `n` uniformly random tokens, then the same `n` tokens
# again. Nothing about random tokens is predictable the first time; the second time, a model that can
# look back and copy predicts them perfectly.

# %%
def make_repeated_tokens(n_batch: int, n: int, d_vocab: int, bos: int, seed: int = 0) -> Int[Tensor, "batch seq"]:
    """BOS followed by n random tokens, repeated once: shape [n_batch, 1 + 2 n]. Never samples BOS itself."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(0, d_vocab - 1, (n_batch, n), generator=gen)
    r = r + (r >= bos).long()  # skip the BOS id
    return torch.cat([torch.full((n_batch, 1), bos, dtype=torch.long), r, r], dim=1)


text_tokens = torch.load(micourse.models.asset_dir("attn_only_2l") / "text_sample.pt").long()[:40]
N_REP = 30
rep_tokens = make_repeated_tokens(8, N_REP, cfg.d_vocab, tokenizer.bos_token_id)
print("text:", text_tokens.shape, repr(tokenizer.decode(text_tokens[0, :40])))
print("repeated:", rep_tokens.shape, model.to_str_tokens(rep_tokens[0, :6]))

logits_tl, cache = model.run_with_cache(rep_tokens)

# %% [markdown]
# # Part 1 · Build it
#
# **Learning objectives**
# - Say what each weight matrix of an attention-only transformer does, with its shape.
# - Implement embedding, LayerNorm, per-head queries/keys/values, causal attention, and the residual stream.
# - Check an implementation against TransformerLens's activations (`run_with_cache`) and logits.
# - Compute the next-token loss, and see it fall on the repeated half of a sequence.
#
# The model computes, for tokens $t_1 \dots t_n$ (paper, section "Transformer Overview"):
#
# $$x_0 = W_E[t] + W_{pos}[\text{position}], \qquad x_{\ell+1} = x_\ell + \sum_{h} h\big(\mathrm{LN}(x_\ell)\big),
# \qquad \text{logits} = \mathrm{LN}(x_L)\, W_U + b_U.$$
#
# The vector $x_\ell$ is the **residual stream**: every layer reads from it and adds its output back in.
# Each head $h$ moves information between positions. Nothing else happens in an attention-only model.

# %% [markdown]
# ## Exercise: token embedding
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# The residual stream starts as one vector per token: row `t` of the embedding matrix `W_E`. Everything the
# model knows about *which* token sits at a position enters here, and the paper's direct path (Part 2)
# begins here too.
#
# Build `embed(W_E, tokens)`: `W_E` is `[d_vocab, d_model]`, `tokens` is `[batch, pos]` of integer ids; return
# `[batch, pos, d_model]` with `out[b, p] = W_E[tokens[b, p]]`. It works when it matches
# `cache["hook_embed"]`.
#
# <details><summary>Hint 1</summary>Row <code>t</code> of <code>W_E</code> is token <code>t</code>'s vector: you need one row for every entry of <code>tokens</code>, whatever its shape.</details>
# <details><summary>Hint 2</summary>Indexing a tensor with an integer tensor ("advanced indexing") picks rows and keeps the index's shape (<code>torch.nn.functional.embedding</code> does the same).</details>

# %% nbgrader={"grade": false, "grade_id": "embed", "locked": false, "schema_version": 3, "solution": true}
def embed(W_E: Float[Tensor, "d_vocab d_model"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
    """Return the embedding of every token: out[b, p] = W_E[tokens[b, p]]."""
    ### BEGIN SOLUTION
    return W_E[tokens]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_embed", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(embed)

# %% [markdown]
# ## Exercise: positional embedding
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# Apart from the causal mask, attention by itself does not know where tokens are: permute the earlier keys
# (with their values) and a query's weighted sum is the same.
# This model adds a learned vector per *position*, `W_pos[p]`, to the residual stream. A previous-token head
# (Part 2) is built almost entirely out of these vectors.
#
# Build `pos_embed(W_pos, tokens)`: `W_pos` is `[n_ctx, d_model]`; return `[batch, pos, d_model]` where
# `out[b, p] = W_pos[p]` for every sequence `b`. The token ids only tell you the batch size and length.
# It works when it matches `cache["hook_pos_embed"]`.
#
# <details><summary>Hint 1</summary>Which rows of <code>W_pos</code> does a sequence of length <code>pos</code> use? Every sequence of the batch uses the same ones.</details>
# <details><summary>Hint 2</summary>A slice of <code>W_pos</code>, then a new batch axis: <code>Tensor.expand</code> (or <code>einops.repeat</code>).</details>

# %% nbgrader={"grade": false, "grade_id": "pos_embed", "locked": false, "schema_version": 3, "solution": true}
def pos_embed(W_pos: Float[Tensor, "n_ctx d_model"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
    """Return the positional embedding of every position: out[b, p] = W_pos[p]."""
    ### BEGIN SOLUTION
    batch, pos = tokens.shape
    return W_pos[:pos].unsqueeze(0).expand(batch, pos, W_pos.shape[-1])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_pos_embed", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(pos_embed)

# %% [markdown]
# ## Exercise: LayerNorm
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# Before each layer (and before the unembedding) the residual stream goes through LayerNorm: subtract the
# mean over `d_model`, divide by the standard deviation, then scale by `w` and shift by `b`. It is the only
# non-linearity in this model besides the attention softmax. The paper leaves it out of its equations; in
# Part 2 you will see how TransformerLens folds `w` and `b` into the neighbouring weights, so that what
# remains is a per-position scale.
#
# Build `layer_norm(x, w, b, eps)`: `x` is `[batch, pos, d_model]`, `w` and `b` are `[d_model]`. Return
# `(x - mean) / sqrt(var + eps) * w + b` with the mean and the (biased, i.e. divide by `d_model`) variance
# taken over the last axis. It works when `layer_norm(cache["resid_pre", 0], ...)` matches
# `cache["blocks.0.ln1.hook_out"]`.
#
# <details><summary>Hint 1</summary>Use <code>keepdim=True</code> so the mean and variance broadcast back over <code>d_model</code>.</details>
# <details><summary>Hint 2</summary><code>x.var(-1)</code> divides by <code>d_model - 1</code> unless you pass <code>unbiased=False</code> (<code>correction=0</code>); LayerNorm divides by <code>d_model</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "layer_norm", "locked": false, "schema_version": 3, "solution": true}
def layer_norm(x: Float[Tensor, "... d_model"], w: Float[Tensor, "d_model"], b: Float[Tensor, "d_model"],
               eps: float = 1e-5) -> Float[Tensor, "... d_model"]:
    """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * w + b, with the biased variance."""
    ### BEGIN SOLUTION
    centred = x - x.mean(dim=-1, keepdim=True)
    scale = (centred.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt()
    return centred / scale * w + b
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_layer_norm", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(layer_norm)

# %% [markdown]
# ## Exercise: queries, keys and values of every head
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Each head reads the (normalised) residual stream through three `[d_model, d_head]` matrices: `W_Q` gives
# what a position is looking for, `W_K` what it offers to be found by, `W_V` what it passes on if attended
# to. TransformerLens stores them for all heads of a layer as `W_Q[layer]` of shape `[n_heads, d_model, d_head]`,
# with biases `b_Q[layer]` of shape `[n_heads, d_head]`. The same projection serves for Q, K and V.
#
# Build `project_to_heads(x, W, b)`: `x` is `[batch, pos, d_model]`; return `[batch, pos, n_heads, d_head]`
# with `out[b, p, h] = x[b, p] @ W[h] + b[h]`. It works when `project_to_heads(ln1_out, W_Q[0], b_Q[0])`
# matches `cache["q", 0]` (likewise k and v).
#
# <details><summary>Hint 1</summary>Every head has its own <code>W[h]</code>; batch and position just come along. Don't forget the bias: it broadcasts over batch and position.</details>
# <details><summary>Hint 2</summary><code>torch.einsum</code> with one letter per axis (batch, position, d_model, head, d_head), summing over d_model.</details>

# %% nbgrader={"grade": false, "grade_id": "project_to_heads", "locked": false, "schema_version": 3, "solution": true}
def project_to_heads(x: Float[Tensor, "batch pos d_model"], W: Float[Tensor, "n_heads d_model d_head"],
                     b: Float[Tensor, "n_heads d_head"]) -> Float[Tensor, "batch pos n_heads d_head"]:
    """Per-head projection of the residual stream: out[b, p, h] = x[b, p] @ W[h] + b[h]."""
    ### BEGIN SOLUTION
    return torch.einsum("bpd,hde->bphe", x, W) + b
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_project_to_heads", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(project_to_heads)

# %% [markdown]
# ## Exercise: causal attention scores
# > Difficulty 2/5 · Importance 5/5 · ~15 min
#
# A head's attention score from a query position `q` to a key position `k` is the dot product of their
# query and key vectors, divided by `sqrt(d_head)` so that scores do not grow with the head size. The model
# predicts the next token, so position `q` may only look at keys `k <= q`: later keys are **masked** with
# minus infinity, which the softmax turns into exactly zero attention. This is the QK half of the paper's
# "QK and OV circuits" (section "One-Layer Attention-Only Transformers").
#
# Build `attention_scores(q, k)`: `q`, `k` are `[batch, pos, n_heads, d_head]`; return
# `[batch, n_heads, q_pos, k_pos]` with `q·k / sqrt(d_head)` where `k_pos <= q_pos` and `-inf` (or a very
# large negative number) where `k_pos > q_pos`. It works when the softmax of your scores equals
# `cache["pattern", 0]`.
#
# <details><summary>Hint 1</summary>Two steps: the scaled dot product of every query with every key of the same head, then the mask. In a <code>[q_pos, k_pos]</code> table, where are the keys that come after their query?</details>
# <details><summary>Hint 2</summary><code>torch.einsum</code> for the products (summing over d_head); <code>torch.triu</code> (with its <code>diagonal</code> argument) builds a mask of the future and <code>Tensor.masked_fill</code> applies it. The diagonal itself (a token attending to itself) is allowed.</details>

# %% nbgrader={"grade": false, "grade_id": "attention_scores", "locked": false, "schema_version": 3, "solution": true}
def attention_scores(q: Float[Tensor, "batch pos n_heads d_head"],
                     k: Float[Tensor, "batch pos n_heads d_head"]) -> Float[Tensor, "batch n_heads q_pos k_pos"]:
    """Scaled dot-product scores q.k / sqrt(d_head), with future keys (k_pos > q_pos) set to -inf."""
    ### BEGIN SOLUTION
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / q.shape[-1] ** 0.5
    n_q, n_k = scores.shape[-2:]
    future = torch.triu(torch.ones(n_q, n_k, dtype=torch.bool, device=q.device), diagonal=1)
    return scores.masked_fill(future, float("-inf"))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_attention_scores", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(attention_scores)

# %% [markdown]
# ## Exercise: attention pattern
# > Difficulty 1/5 · Importance 5/5 · ~5 min
#
# The attention pattern is the softmax of the scores over the **keys**: each query position distributes one
# unit of attention over the positions it may see. Patterns are what we look at first when we meet a head.
#
# Build `attention_pattern(scores)`: `scores` is `[batch, n_heads, q_pos, k_pos]` (masked entries `-inf`);
# return the softmax over `k_pos`, same shape. Each row sums to 1 and the future gets exactly 0. It works
# when `attention_pattern(attention_scores(q, k))` equals `cache["pattern", 0]`.
#
# <details><summary>Hint 1</summary>The last axis is the key axis.</details>
# <details><summary>Hint 2</summary>If you write the softmax yourself, subtract each row's maximum before <code>exp</code>, or large scores overflow to <code>inf</code> and give <code>nan</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "attention_pattern", "locked": false, "schema_version": 3, "solution": true}
def attention_pattern(scores: Float[Tensor, "batch n_heads q_pos k_pos"]) -> Float[Tensor, "batch n_heads q_pos k_pos"]:
    """Softmax of the scores over the key axis (the last one)."""
    ### BEGIN SOLUTION
    return scores.softmax(dim=-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_attention_pattern", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(attention_pattern)

# %% [markdown]
# Your own pattern for layer 0, head 0 on the first repeated sequence (first 12 positions). It should be lower
# triangular (nothing above the diagonal) with every row summing to 1.
# Attention patterns are probabilities, so they are drawn on a sequential scale (white = 0, dark blue = 1),
# not the red/blue diverging scale the course uses for signed scores.

# %%
ln1_out_0 = layer_norm(cache["resid_pre", 0], params["blocks.0.ln1.w"], params["blocks.0.ln1.b"])
q0 = project_to_heads(ln1_out_0, params["blocks.0.attn.W_Q"], params["blocks.0.attn.b_Q"])
k0 = project_to_heads(ln1_out_0, params["blocks.0.attn.W_K"], params["blocks.0.attn.b_K"])
my_pattern_0 = attention_pattern(attention_scores(q0, k0))
plots.attention_pattern(my_pattern_0[0, 0, :12, :12], model.to_str_tokens(rep_tokens[0, :12]),
                        title="Your layer-0 head-0 pattern (first 12 positions)")

# %% [markdown]
# ## Exercise: a head's output, z
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Once a head knows where to look, it moves information: the output at query position `q` is the
# attention-weighted average of the value vectors at the keys, `z[q] = sum_k pattern[q, k] v[k]`. This is
# the "information movement" the paper talks about: the only way one position learns about another.
#
# Build `attention_z(pattern, v)`: `pattern` is `[batch, n_heads, q_pos, k_pos]`, `v` is
# `[batch, k_pos, n_heads, d_head]`; return `z` of shape `[batch, q_pos, n_heads, d_head]`. It works when it
# matches `cache["z", 0]`.
#
# <details><summary>Hint 1</summary>Sum over the key position, keep the query position; each head uses its own pattern and its own values.</details>
# <details><summary>Hint 2</summary><code>torch.einsum</code>; note that the head axis sits at a different place in <code>pattern</code>, <code>v</code> and the output.</details>

# %% nbgrader={"grade": false, "grade_id": "attention_z", "locked": false, "schema_version": 3, "solution": true}
def attention_z(pattern: Float[Tensor, "batch n_heads q_pos k_pos"],
                v: Float[Tensor, "batch k_pos n_heads d_head"]) -> Float[Tensor, "batch q_pos n_heads d_head"]:
    """Each head's attention-weighted sum of values: z[b, q, h] = sum_k pattern[b, h, q, k] * v[b, k, h]."""
    ### BEGIN SOLUTION
    return torch.einsum("bhqk,bkhe->bqhe", pattern, v)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_attention_z", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(attention_z)

# %% [markdown]
# ## Exercise: each head's result in the residual stream
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# `W_O` maps each head's `d_head`-dimensional `z` back into the residual stream. The paper's key observation
# (section "Transformer Overview", "attention heads are independent and additive"): the layer's output is
# just the **sum** of what each head writes, `z_h @ W_O[h]`. Keeping the heads apart is what lets us ask,
# later, what each head contributes.
#
# Build `head_results(z, W_O)`: `z` is `[batch, pos, n_heads, d_head]`, `W_O` is `[n_heads, d_head, d_model]`;
# return `[batch, pos, n_heads, d_model]` with `out[b, p, h] = z[b, p, h] @ W_O[h]`. It works when the sum
# over heads plus `b_O` equals `cache["attn_out", 0]`.
#
# <details><summary>Hint 1</summary>Careful: <code>z @ W_O</code> broadcasts the wrong axes (it pairs position with head, or fails).</details>
# <details><summary>Hint 2</summary><code>torch.einsum</code>, naming every axis: sum over d_head, keep the head axis.</details>

# %% nbgrader={"grade": false, "grade_id": "head_results", "locked": false, "schema_version": 3, "solution": true}
def head_results(z: Float[Tensor, "batch pos n_heads d_head"],
                 W_O: Float[Tensor, "n_heads d_head d_model"]) -> Float[Tensor, "batch pos n_heads d_model"]:
    """What each head writes into the residual stream: out[b, p, h] = z[b, p, h] @ W_O[h] (no bias)."""
    ### BEGIN SOLUTION
    return torch.einsum("bphe,hed->bphd", z, W_O)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_head_results", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(head_results)

# %% [markdown]
# ## Exercise: a whole attention layer
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Put the pieces together. An attention layer takes the normalised residual stream, computes every head's
# queries, keys and values, the causal pattern, `z`, and each head's result; the layer output is the sum of
# the heads' results plus the output bias `b_O`.
#
# Build `attention_layer(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O)`: `x` is the LayerNorm output
# `[batch, pos, d_model]`, the weights are one layer's (`W_Q[layer]` etc.); return the layer output
# `[batch, pos, d_model]`. Use your functions above. It works when it matches `cache["attn_out", 0]`.
#
# <details><summary>Hint 1</summary>Every piece exists already; the layer only chains them. How do the heads' results combine (paper: "independent and additive")?</details>
# <details><summary>Hint 2</summary><code>project_to_heads</code> (for q, k and v), <code>attention_scores</code>, <code>attention_pattern</code>, <code>attention_z</code>, <code>head_results</code>; then combine over the head axis and add <code>b_O</code> once.</details>

# %% nbgrader={"grade": false, "grade_id": "attention_layer", "locked": false, "schema_version": 3, "solution": true}
def attention_layer(x: Float[Tensor, "batch pos d_model"],
                    W_Q: Float[Tensor, "n_heads d_model d_head"], b_Q: Float[Tensor, "n_heads d_head"],
                    W_K: Float[Tensor, "n_heads d_model d_head"], b_K: Float[Tensor, "n_heads d_head"],
                    W_V: Float[Tensor, "n_heads d_model d_head"], b_V: Float[Tensor, "n_heads d_head"],
                    W_O: Float[Tensor, "n_heads d_head d_model"], b_O: Float[Tensor, "d_model"]) -> Float[Tensor, "batch pos d_model"]:
    """One causal attention layer on an already-normalised input: sum over heads of z_h @ W_O[h], plus b_O."""
    ### BEGIN SOLUTION
    q = project_to_heads(x, W_Q, b_Q)
    k = project_to_heads(x, W_K, b_K)
    v = project_to_heads(x, W_V, b_V)
    z = attention_z(attention_pattern(attention_scores(q, k)), v)
    return head_results(z, W_O).sum(dim=2) + b_O
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_attention_layer", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(attention_layer)

# %% [markdown]
# ## Exercise: the full forward pass
# > Difficulty 3/5 · Importance 5/5 · ~15 min
#
# Now the whole model: embed, then for each layer add the attention layer's output (computed from the
# LayerNorm of the residual stream) to the residual stream, then a final LayerNorm and the unembedding
# `W_U` (`[d_model, d_vocab]`) plus `b_U`. If this matches TransformerLens, you know every operation in the
# model, and everything in Part 2 is a rearrangement of what you wrote here.
#
# Build `attn_only_forward(tokens, params, n_layers, eps)`: `params` is the dictionary above
# (`"embed.W_E"`, `"pos_embed.W_pos"`, `"blocks.{l}.ln1.w"`, `"blocks.{l}.ln1.b"`, `"blocks.{l}.attn.W_Q"`,
# ..., `"blocks.{l}.attn.b_O"`, `"ln_final.w"`, `"ln_final.b"`, `"unembed.W_U"`, `"unembed.b_U"`);
# return logits `[batch, pos, d_vocab]`. It works when it matches `model(tokens)` to about 1e-4.
#
# <details><summary>Hint 1</summary>Follow the equations at the top of Part 1: the stream starts as the sum of two embeddings; each layer reads a normalised copy of it and <b>adds</b> its output to the stream (it does not replace it).</details>
# <details><summary>Hint 2</summary><code>embed</code> and <code>pos_embed</code>, a loop over layers of <code>layer_norm</code> then <code>attention_layer</code> (with the layer's <code>ln1</code> and <code>attn</code> weights), then <code>layer_norm</code> with <code>ln_final</code>, <code>W_U</code> and <code>b_U</code>. Pass <code>eps</code> on.</details>

# %% nbgrader={"grade": false, "grade_id": "attn_only_forward", "locked": false, "schema_version": 3, "solution": true}
def attn_only_forward(tokens: Int[Tensor, "batch pos"], params: dict[str, Tensor], n_layers: int,
                      eps: float = 1e-5) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of an attention-only transformer with LayerNorm, from its weights (TransformerLens names)."""
    ### BEGIN SOLUTION
    resid = embed(params["embed.W_E"], tokens) + pos_embed(params["pos_embed.W_pos"], tokens)
    for layer in range(n_layers):
        pre = f"blocks.{layer}"
        x = layer_norm(resid, params[f"{pre}.ln1.w"], params[f"{pre}.ln1.b"], eps)
        a = {name: params[f"{pre}.attn.{name}"] for name in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")}
        resid = resid + attention_layer(x, **a)
    x = layer_norm(resid, params["ln_final.w"], params["ln_final.b"], eps)
    return x @ params["unembed.W_U"] + params["unembed.b_U"]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_attn_only_forward", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(attn_only_forward)

# %%
my_logits = attn_only_forward(rep_tokens, params, cfg.n_layers, cfg.eps)
print(f"largest difference from TransformerLens's logits: {(my_logits - logits_tl).abs().max().item():.2e}")

# %% [markdown]
# ## Exercise: the next-token loss
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# The model was trained to predict, at each position, the **next** token. Its loss at position `p` is the
# cross-entropy `-log softmax(logits[p])[token[p + 1]]`; the last position has no next token. Per-token loss
# is the simplest behavioural measurement we have, and the first thing to look at when a model does
# something interesting on some positions and not others.
#
# Build `per_token_loss(logits, tokens)`: `logits` is `[batch, pos, d_vocab]`, `tokens` `[batch, pos]`;
# return `[batch, pos - 1]` with the loss of predicting `tokens[:, p + 1]` from `logits[:, p]`. It works
# when it matches `model(tokens, return_type="loss", loss_per_token=True)`.
#
# <details><summary>Hint 1</summary>Log-probabilities at each position, and from them the one of the <b>next</b> token; the last position has nothing to predict. The loss is minus a log-probability.</details>
# <details><summary>Hint 2</summary><code>Tensor.log_softmax</code>, slices that shift the targets by one position, and <code>torch.gather</code> along the vocabulary axis.</details>

# %% nbgrader={"grade": false, "grade_id": "per_token_loss", "locked": false, "schema_version": 3, "solution": true}
def per_token_loss(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos_minus_1"]:
    """Cross-entropy of predicting tokens[:, p + 1] from logits[:, p], for p = 0 .. pos - 2."""
    ### BEGIN SOLUTION
    log_probs = logits.log_softmax(dim=-1)
    return -log_probs[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_per_token_loss", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(per_token_loss)

# %% [markdown]
# Your loss on the repeated random tokens, by position (averaged over the batch). Position `p` of the plot is
# the loss of predicting token `p`: tokens `1 .. n` are the first copy, `n + 1 .. 2n` the second. You should
# see a loss around `log(1024) ≈ 6.9` or worse on the first copy, where the tokens are unpredictable, and on
# the second copy a far lower one, under 1 nat on average: the model has learnt to look back and copy.
#
# Not every token of the second copy is cheap. Its **first** token (position `n + 1`) cannot be predicted: nothing
# before it says that the sequence is about to repeat. Its **second** token still costs more than 5 nats, although
# the model has just seen the token before it and could copy what followed that token last time. From the third
# token on, the loss is under 0.5 nats on average. Part 2 finds out what goes wrong at the second token (see
# "Why the second token of the copy is missed").

# %%
rep_loss = per_token_loss(my_logits, rep_tokens).mean(0)
text_loss = per_token_loss(attn_only_forward(text_tokens, params, cfg.n_layers, cfg.eps), text_tokens).mean()
print(f"loss on held-out text: {text_loss:.2f} nats; on random tokens, first copy "
      f"{rep_loss[:N_REP].mean():.2f}, second copy {rep_loss[N_REP:].mean():.2f}")
print(f"second copy, token by token: 1st {rep_loss[N_REP]:.2f}, 2nd {rep_loss[N_REP + 1]:.2f}, "
      f"3rd and later {rep_loss[N_REP + 2:].mean():.2f} on average")
plots.lines(rep_loss, x=torch.arange(1, rep_loss.shape[0] + 1), title="Loss per position on repeated random tokens",
            x_title="position of the predicted token", y_title="loss (nats)")

# %% [markdown]
# ### Recap of Part 1
# - An attention-only transformer is: embeddings into a residual stream; per layer, LayerNorm then heads
#   that each add `pattern · (x W_V) W_O` to the stream; a final LayerNorm and the unembedding.
# - Your implementation reproduces TransformerLens's logits from the weights alone.
# - On held-out text the model is a weak language model (about 4 nats per token, against 6.9 for a uniform
#   guess over 1024 tokens). On a repeated random sequence its loss falls from about 7 nats on the first copy
#   to under 1 on the second, and under 0.5 from the copy's third token on; the first two tokens of the copy
#   stay expensive. Part 2 finds the heads that do this, from their weights.

# %% [markdown]
# # Part 2 · Read it
#
# **Learning objectives**
# - Find previous-token and induction heads from their attention patterns.
# - Fold LayerNorm into the weights, and write the logits as a sum of paths (direct path + one term per head).
# - Read the direct path as bigram statistics.
# - Build QK and OV circuits as low-rank `FactoredMatrix` objects; read the positional QK circuit of a
#   previous-token head and the skip-trigrams of an OV circuit.
# - Measure copying with eigenvalues, and composition between heads with composition scores.
#
# ## Folding LayerNorm
#
# LayerNorm's `w` and `b` are linear, so they can be multiplied into the next weights (`w` into `W_Q`, `W_K`,
# `W_V`, `W_U`; `b` into the biases). What remains is "centre, then divide by the standard deviation over
# `d_model`" (for a centred vector that is its root-mean-square, its norm divided by `sqrt(d_model)`, with
# `eps` under the square root). TransformerLens
# also **centres** every matrix that writes into the residual stream (`W_E`, `W_pos`, `W_O`, `b_O`), so every
# component of the stream has mean zero over `d_model`, and centres `W_U` (which shifts every logit at a
# position by the same amount: probabilities do not change). `enable_compatibility_mode()` does both, once
# and for good. Your `per_token_loss` confirms the model's predictions are unchanged.

# %%
loss_before = per_token_loss(model(text_tokens[:8]), text_tokens[:8])
model.enable_compatibility_mode()  # folds LayerNorm and centres the weights, in place
loss_after = per_token_loss(model(text_tokens[:8]), text_tokens[:8])
print(f"largest change in per-token loss: {(loss_after - loss_before).abs().max().item():.1e}")
print(f"LayerNorm weight now: {model.tl_parameters()['blocks.0.ln1.w'][:4].tolist()} ...; "
      f"largest |mean of a W_E row|: {model.W_E.mean(-1).abs().max().item():.1e}")
logits, cache = model.run_with_cache(rep_tokens)

# %% [markdown]
# ## Meeting the heads
#
# Two kinds of head matter on repeated sequences (Elhage et al. 2021, section "Two-Layer Attention-Only
# Transformers"; Olsson et al. 2022). A **previous-token head** attends from each position to the one before
# it: its pattern is the diagonal just below the main one (`offset -1`). An **induction head**, at a token that
# appeared before, attends to the token that *followed* the earlier occurrence. In `BOS + R + R` with `R` of
# length `n`, position `q` in the second copy attends to `q - n + 1`: the diagonal at `offset 1 - n`.

# %% [markdown]
# ## Exercise: a diagonal score for every head
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# A head's average attention along one diagonal of its pattern is a one-number summary of a positional habit.
# With `offset = -1` it is the previous-token score; with `offset = 1 - n` on repeated tokens, it is what we use
# here as the induction score (a common threshold for "this is an induction head" is 0.4). That diagonal starts
# at query `n - 1`, so its first two entries (queries `n - 1` and `n`) are still in the first copy, where an
# induction head has nothing to find; they pull the score down a little. Chapter 2's `induction_score` leaves
# them out, so its scores are a few hundredths higher than the ones here.
#
# Build `diagonal_score(pattern, offset)`: `pattern` is `[batch, n_heads, q_pos, k_pos]`; return `[n_heads]`,
# the mean over the batch and over the entries `pattern[b, h, q, q + offset]` (every query for which that
# key exists). It works when a pattern that always attends to the previous position scores 1 at offset -1.
#
# <details><summary>Hint 1</summary>The entries <code>pattern[b, h, q, q + offset]</code> form one diagonal of the last two axes; then average over everything but the head.</details>
# <details><summary>Hint 2</summary><code>torch.diagonal</code> with <code>dim1</code> and <code>dim2</code> set to the last two axes (without them it takes the diagonal of batch and head); it puts the diagonal last.</details>

# %% nbgrader={"grade": false, "grade_id": "diagonal_score", "locked": false, "schema_version": 3, "solution": true}
def diagonal_score(pattern: Float[Tensor, "batch n_heads q_pos k_pos"], offset: int) -> Float[Tensor, "n_heads"]:
    """Mean attention on the diagonal k_pos = q_pos + offset, over the batch and the diagonal, per head."""
    ### BEGIN SOLUTION
    return pattern.diagonal(offset=offset, dim1=-2, dim2=-1).mean(dim=(0, -1))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_diagonal_score", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(diagonal_score)

# %% [markdown]
# Scores of every head. You should see one layer-0 head with a high previous-token score (above 0.9 here) and
# one or more layer-1 heads with an induction score above 0.4 (above 0.8 here); the other heads score below 0.4
# on both. Leaving out the two first-copy queries (as chapter 2 does; second line printed below) changes every
# induction score by less than 0.1 and picks out the same heads.

# %%
prev_scores = torch.stack([diagonal_score(cache["pattern", layer], -1) for layer in range(cfg.n_layers)])
ind_scores = torch.stack([diagonal_score(cache["pattern", layer], 1 - N_REP) for layer in range(cfg.n_layers)])
prev_head = int(prev_scores[0].argmax())
ind_heads = [int(h) for h in (ind_scores[1] > 0.4).nonzero().flatten()]
ind_head = int(ind_scores[1].argmax())
print(f"previous-token head: L0H{prev_head}; induction heads (score > 0.4): {[f'L1H{h}' for h in ind_heads]}")
q = torch.arange(N_REP + 1, 2 * N_REP + 1)  # the queries of the second copy only
second_copy_only = cache["pattern", 1][:, :, q, q + 1 - N_REP].mean((0, -1))
print(f"layer-1 induction scores: {[round(x, 3) for x in ind_scores[1].tolist()]}; "
      f"second-copy queries only: {[round(x, 3) for x in second_copy_only.tolist()]}")
fig = plots.layer_head_grid(prev_scores, title="previous-token score (offset -1)", diverging=False, range_color=[0, 1])
fig.show()
plots.layer_head_grid(ind_scores, title=f"induction score (offset 1 - n, n = {N_REP})", diverging=False, range_color=[0, 1])

# %% [markdown]
# The patterns themselves, for all eight heads on a shorter repeated sequence (hover a head, then a token).
# The previous-token head shows the line just below the diagonal; the induction heads show a line `n - 1`
# below it, starting where the repeat begins.


# %%
short = make_repeated_tokens(1, 12, cfg.d_vocab, tokenizer.bos_token_id, seed=1)
_, short_cache = model.run_with_cache(short)
vis.attention_heads(torch.cat([short_cache["pattern", layer][0] for layer in range(cfg.n_layers)]),
                    model.to_str_tokens(short[0]),
                    head_names=[f"L{layer}H{h}" for layer in range(cfg.n_layers) for h in range(cfg.n_heads)])

# %% [markdown]
# ### Why the second token of the copy is missed
#
# Part 1 found that the second token of the second copy still costs more than 5 nats. To predict it, at
# position `n + 1` (the token `r_0`), an induction head must find the position whose *previous* token was `r_0`:
# position 2, the second token of the first copy. But position 2 comes right after BOS, and at position 2 the
# previous-token head puts most of its attention on BOS rather than on position 1; so position 2 never gets the
# message "my previous token was `r_0`". From position 3 on it attends to the previous position almost every
# time. Put one random token between BOS and the first copy, and the second token of the copy costs under 2 nats.

# %%
at_2 = cache["pattern", 0][:, prev_head, 2]  # the previous-token head's attention from position 2
later = torch.stack([cache["pattern", 0][:, prev_head, q, q - 1] for q in range(3, rep_tokens.shape[1])])
print(f"L0H{prev_head} at position 2: attention on BOS {at_2[:, 0].mean():.2f}, on position 1 {at_2[:, 1].mean():.2f}; "
      f"at positions 3 and later, on the previous position {later.mean():.2f}")
filler = make_repeated_tokens(rep_tokens.shape[0], 1, cfg.d_vocab, tokenizer.bos_token_id, seed=2)[:, 1:2]
shifted = torch.cat([rep_tokens[:, :1], filler, rep_tokens[:, 1:]], dim=1)  # BOS, one random token, R, R
shifted_loss = per_token_loss(model(shifted), shifted).mean(0)
print(f"loss on the second token of the second copy: {rep_loss[N_REP + 1]:.2f} nats; with one token before the "
      f"first copy: {shifted_loss[N_REP + 2]:.2f}")

# %% [markdown]
# ## The direct path: a zero-layer model is a bigram table
#
# A transformer with no layers computes `logits = W_E[t] @ W_U`: the next-token prediction can only depend on
# the current token. The best it can do is learn the bigram statistics of the training text (paper, section
# "Zero-Layer Transformers"). In our 2-layer model this **direct path** (embedding straight to unembedding)
# is still one of the terms of the logits, and it still looks like a bigram table.

# %% [markdown]
# ## Exercise: direct-path logits
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# Build `direct_path_logits(W_E, W_U)`: `W_E` is `[d_vocab, d_model]`, `W_U` is `[d_model, d_vocab_out]`;
# return `[d_vocab, d_vocab_out]` whose row `t` is the logits the direct path gives after token `t`
# (ignoring LayerNorm's scale, which only multiplies each row by a positive number). It works when row `t`
# equals `W_E[t] @ W_U`.
#
# <details><summary>Hint</summary>One matrix product; check which way round by the shapes.</details>

# %% nbgrader={"grade": false, "grade_id": "direct_path_logits", "locked": false, "schema_version": 3, "solution": true}
def direct_path_logits(W_E: Float[Tensor, "d_vocab d_model"],
                       W_U: Float[Tensor, "d_model d_vocab_out"]) -> Float[Tensor, "d_vocab d_vocab_out"]:
    """The direct path's logits: row t (the current token) -> logits over the next token."""
    ### BEGIN SOLUTION
    return W_E @ W_U
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_direct_path_logits", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(direct_path_logits)

# %% [markdown]
# ## Exercise: bigram counts
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# To see whether the direct path learnt bigrams we need the bigrams of real text. Counting them is a
# one-liner with a classic trap: `counts[a, b] += 1` with index tensors `a`, `b` adds **once** per distinct
# pair, however many times the pair repeats.
#
# Build `bigram_counts(tokens, d_vocab)`: `tokens` is `[batch, pos]`; return a float `[d_vocab, d_vocab]` tensor
# whose entry `[a, b]` counts how often token `b` directly follows token `a` **within** a sequence (pairs do
# not cross from the end of one row to the start of the next). It works when the counts sum to
# `batch * (pos - 1)`.
#
# <details><summary>Hint 1</summary>The pairs are <code>(tokens[:, :-1], tokens[:, 1:])</code>, flattened.</details>
# <details><summary>Hint 2</summary><code>Tensor.index_put_</code> with <code>accumulate=True</code>; or <code>torch.bincount</code> of one number per pair (a pair <code>(a, b)</code> is one index into a flattened <code>[d_vocab, d_vocab]</code> table).</details>

# %% nbgrader={"grade": false, "grade_id": "bigram_counts", "locked": false, "schema_version": 3, "solution": true}
def bigram_counts(tokens: Int[Tensor, "batch pos"], d_vocab: int) -> Float[Tensor, "d_vocab d_vocab"]:
    """counts[a, b] = number of times token b directly follows token a inside a row of `tokens`."""
    ### BEGIN SOLUTION
    first, second = tokens[:, :-1].reshape(-1), tokens[:, 1:].reshape(-1)
    flat = torch.bincount(first * d_vocab + second, minlength=d_vocab * d_vocab)
    return flat.reshape(d_vocab, d_vocab).float()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_bigram_counts", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(bigram_counts)

# %% [markdown]
# The direct path's top five next tokens after some frequent tokens, beside the five most frequent followers
# in 200 held-out text windows. For most of these tokens the two lists share at least one token, but they are
# far from equal: the sample is small, and in a 2-layer model some bigram knowledge can live in heads that
# attend to the current token. The correlation, averaged over the 30 most frequent tokens, between a row of
# direct-path logits and the log of that token's bigram counts is positive (above 0.2).

# %%
all_text = torch.load(micourse.models.asset_dir("attn_only_2l") / "text_sample.pt").long()
counts = bigram_counts(all_text, cfg.d_vocab)
direct = direct_path_logits(model.W_E, model.W_U)
frequent = counts.sum(1).argsort(descending=True)[:30]
for t in frequent[:12].tolist():
    print(f"{tokenizer.decode([t])!r:>8} -> direct path {[tokenizer.decode([i]) for i in direct[t].topk(5).indices]}"
          f"  text {[tokenizer.decode([i]) for i in counts[t].topk(5).indices]}")
corr = torch.stack([torch.corrcoef(torch.stack([direct[t], (counts[t] + 1).log()]))[0, 1] for t in frequent])
print(f"mean correlation over the 30 most frequent tokens: {corr.mean():.2f}")

# %% [markdown]
# ## The residual stream as a sum of paths
#
# Every head writes into the residual stream by addition, so the final residual stream is a sum:
# embedding + positional embedding + one term per head + the output biases. With LayerNorm folded, the final
# LayerNorm only divides each position by a scale; if we **freeze** that scale (read it from the cache), the
# logits become a sum of one term per component (paper, sections "Transformer Overview" and "One-Layer
# Attention-Only Transformers"). Each term says how much one path pushes each logit: **direct logit
# attribution**.

# %% [markdown]
# ## Exercise: stack the residual stream's components
# > Difficulty 2/5 · Importance 4/5 · ~15 min
#
# Build `residual_stack(embed, pos_embed, z, W_O, b_O)`: `embed` and `pos_embed` are `[batch, pos, d_model]`,
# `z` is every layer's `z` stacked as `[n_layers, batch, pos, n_heads, d_head]`, `W_O` is
# `[n_layers, n_heads, d_head, d_model]` and `b_O` is `[n_layers, d_model]`. Return
# `[2 + n_layers * n_heads + 1, batch, pos, d_model]` in this order: embed, pos_embed, the result of
# L0H0, L0H1, ..., L1H0, ... (layer by layer), and last the sum of all the `b_O`. The components sum to the
# final residual stream `cache["resid_post", n_layers - 1]`.
#
# <details><summary>Hint 1</summary>Each head's result is its <code>z</code> times its <code>W_O</code>, as in <code>head_results</code>, for every layer. Put the layer axis before the head axis, then merge them; the biases of all layers make one component.</details>
# <details><summary>Hint 2</summary><code>torch.einsum</code> (output axes layer, head, batch, pos, d_model), <code>reshape</code>, and <code>torch.cat</code> of the pieces each given a leading axis of size 1.</details>

# %% nbgrader={"grade": false, "grade_id": "residual_stack", "locked": false, "schema_version": 3, "solution": true}
def residual_stack(embed: Float[Tensor, "batch pos d_model"], pos_embed: Float[Tensor, "batch pos d_model"],
                   z: Float[Tensor, "n_layers batch pos n_heads d_head"],
                   W_O: Float[Tensor, "n_layers n_heads d_head d_model"],
                   b_O: Float[Tensor, "n_layers d_model"]) -> Float[Tensor, "component batch pos d_model"]:
    """[embed, pos_embed, every head's result (layer-major), sum of b_O] stacked on a new first axis."""
    ### BEGIN SOLUTION
    n_layers, batch, pos, n_heads, _ = z.shape
    heads = torch.einsum("lbphe,lhed->lhbpd", z, W_O).reshape(n_layers * n_heads, batch, pos, -1)
    bias = b_O.sum(0).expand(batch, pos, -1)
    return torch.cat([embed[None], pos_embed[None], heads, bias[None]], dim=0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_residual_stack", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(residual_stack)

# %% [markdown]
# ## Exercise: direct logit attribution
# > Difficulty 3/5 · Importance 5/5 · ~15 min
#
# Push each component through the frozen final LayerNorm and the unembedding, and keep only the logit of the
# token that actually comes next. Summed over components (plus `b_U`), this is exactly the model's logit for
# the correct token. Now we can ask which path does the predicting.
#
# Build `logit_attribution(stack, ln_scale, W_U, tokens)`: `stack` is `[component, batch, pos, d_model]`,
# `ln_scale` is the final LayerNorm's scale `cache["ln_final.hook_scale"]` (`[batch, pos, 1]`), `W_U` is
# `[d_model, d_vocab]`, `tokens` `[batch, pos]`. Return `[component, batch, pos - 1]`: component `c`'s
# contribution to the logit of `tokens[:, p + 1]` at position `p`, i.e. `(c - mean(c)) / ln_scale @ W_U`
# at that token. It works when the sum over components plus `b_U` equals the model's logit of the next token.
#
# <details><summary>Hint 1</summary>Centre each component over <code>d_model</code> (the folded LayerNorm centres; after folding it is a no-op, but it keeps the function correct on any weights).</details>
# <details><summary>Hint 2</summary>Rather than the full <code>d_vocab</code> logits, index the columns of <code>W_U</code> with the next tokens (advanced indexing gives <code>[d_model, batch, pos - 1]</code>) and contract over d_model with <code>torch.einsum</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "logit_attribution", "locked": false, "schema_version": 3, "solution": true}
def logit_attribution(stack: Float[Tensor, "component batch pos d_model"], ln_scale: Float[Tensor, "batch pos 1"],
                      W_U: Float[Tensor, "d_model d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "component batch pos_minus_1"]:
    """Each component's contribution to the logit of the next token, through a frozen final LayerNorm."""
    ### BEGIN SOLUTION
    normed = (stack - stack.mean(dim=-1, keepdim=True)) / ln_scale
    directions = W_U[:, tokens[:, 1:]]  # [d_model, batch, pos - 1]
    return torch.einsum("cbpd,dbp->cbp", normed[:, :, :-1], directions)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_logit_attribution", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(logit_attribution)

# %% [markdown]
# The mean contribution of each component to the correct next-token logit, on the first and on the second
# copy of the random tokens (red: raises the correct logit, blue: lowers it). On the first copy no component
# moves it by more than half a logit on average; on the second copy the induction heads push the correct token
# up by far more than any other path (more than twice as much as the largest of the others).

# %%
stack = residual_stack(cache["embed"], cache["pos_embed"],
                       torch.stack([cache["z", layer] for layer in range(cfg.n_layers)]), model.W_O, model.b_O)
attribution = logit_attribution(stack, cache["ln_final.hook_scale"], model.W_U, rep_tokens)
labels = ["embed", "pos_embed"] + [f"L{layer}H{h}" for layer in range(cfg.n_layers) for h in range(cfg.n_heads)] + ["b_O"]
by_copy = torch.stack([attribution[:, :, 1:N_REP].mean((1, 2)), attribution[:, :, N_REP + 1:].mean((1, 2))])
plots.heatmap(by_copy, x_labels=labels, y_labels=["first copy", "second copy"],
              title="Mean contribution to the correct next-token logit", x_title="component")

# %% [markdown]
# ## QK and OV circuits
#
# Write a head as two bilinear maps (paper, section "One-Layer Attention-Only Transformers"):
# - the **QK circuit** `W_QK = W_Q W_K^T` (`[d_model, d_model]`): the score between a query residual `x_q` and a
#   key residual `x_k` is `x_q W_QK x_k^T / sqrt(d_head)`. **Where** the head looks.
# - the **OV circuit** `W_OV = W_V W_O` (`[d_model, d_model]`): a key residual `x_k` attended to with weight 1
#   writes `x_k W_OV` into the query's stream. **What** the head moves.
#
# Multiply in the embedding and unembedding and both become tables over tokens: `W_E W_QK W_E^T`
# (query token × key token) and `W_E W_OV W_U` (source token × output logit). These are `[1024, 1024]` here
# and `[50257, 50257]` for GPT-2, but their rank is at most `d_head`: keep them as two factors. TransformerLens's
# `FactoredMatrix(A, B)` stands for `A @ B` without multiplying it out; `.AB` multiplies, `.eigenvalues`,
# `.norm()` and `.svd()` work in the small space, and `model.QK[layer, head]`, `model.OV[layer, head]` are
# ready-made ones.

# %% [markdown]
# ## Exercise: a QK circuit as a FactoredMatrix
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# Build `qk_circuit(X_q, X_k, W_Q, W_K)`: `X_q` is `[n_q, d_model]` (e.g. `W_E`, or `W_pos`), `X_k` is
# `[n_k, d_model]`, `W_Q` and `W_K` are one head's `[d_model, d_head]`. Return a `FactoredMatrix` equal to
# `X_q W_Q W_K^T X_k^T` (`[n_q, n_k]`, query rows, key columns, no `1/sqrt(d_head)`, no biases). It works
# when `qk_circuit(I, I, W_Q, W_K).AB` equals `model.QK[layer, head].AB`.
#
# <details><summary>Hint 1</summary>The table is <code>(X_q W_Q)(X_k W_K)^T</code>: split the product where both factors are small.</details>
# <details><summary>Hint 2</summary><code>FactoredMatrix(A, B)</code> with <code>A</code> <code>[n_q, d_head]</code> (the query side) and <code>B</code> <code>[d_head, n_k]</code> (the key side, transposed).</details>

# %% nbgrader={"grade": false, "grade_id": "qk_circuit", "locked": false, "schema_version": 3, "solution": true}
def qk_circuit(X_q: Float[Tensor, "n_q d_model"], X_k: Float[Tensor, "n_k d_model"],
               W_Q: Float[Tensor, "d_model d_head"], W_K: Float[Tensor, "d_model d_head"]) -> FactoredMatrix:
    """The bilinear attention score table X_q W_Q W_K^T X_k^T ([n_q, n_k]) as a FactoredMatrix."""
    ### BEGIN SOLUTION
    return FactoredMatrix(X_q @ W_Q, (X_k @ W_K).T)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_qk_circuit", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(qk_circuit)

# %% [markdown]
# How much does the previous-token head care about *which* tokens it sees, versus *where* they are? Compare the
# spread of its scores over (normalised) token embeddings with the spread over (normalised) positional
# embeddings. You should see the positional table vary far more: the head attends by position.

# %%
def normalise_rows(X: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_model"]:
    """What the folded LayerNorm does to a residual vector: centre it, then scale it to root-mean-square 1."""
    return layer_norm(X, torch.ones(X.shape[-1]), torch.zeros(X.shape[-1]))


for h in range(cfg.n_heads):
    tok_qk = qk_circuit(normalise_rows(model.W_E), normalise_rows(model.W_E), model.W_Q[0, h], model.W_K[0, h])
    pos_qk = qk_circuit(normalise_rows(model.W_pos), normalise_rows(model.W_pos), model.W_Q[0, h], model.W_K[0, h])
    print(f"L0H{h}: std of token x token scores {tok_qk.AB.std():6.2f}, of position x position scores {pos_qk.AB.std():6.2f}")

# %% [markdown]
# ## Exercise: the positional attention of a head
# > Difficulty 3/5 · Importance 4/5 · ~15 min
#
# Feed a head nothing but the positional embeddings, each normalised the way the folded LayerNorm would
# (centred, root-mean-square 1), and compute its causal attention pattern: where it would look if the token
# embeddings were zero and only the positional part of the residual stream were left. If a previous-token head
# works by position, its pattern should put most of each row one step below the diagonal.
#
# Build `positional_attention(W_pos, W_Q, b_Q, W_K, b_K)`: `W_pos` is `[n_pos, d_model]`, the others one
# head's weights (`[d_model, d_head]`, biases `[d_head]`). Return the `[n_pos, n_pos]` pattern: queries
# `normalise(W_pos) @ W_Q + b_Q`, keys likewise, scores scaled by `1/sqrt(d_head)`, causally masked,
# softmax over keys. It works when every row sums to 1 and nothing lies above the diagonal.
#
# <details><summary>Hint 1</summary><code>normalise_rows</code> (defined just above) is your <code>layer_norm</code> with <code>w = 1</code>, <code>b = 0</code>.</details>
# <details><summary>Hint 2</summary>Your <code>attention_scores</code> and <code>attention_pattern</code> take <code>[batch, pos, n_heads, d_head]</code>: give <code>q</code> and <code>k</code> a batch and a head axis of size 1 (index with <code>None</code>) and remove them from the result.</details>

# %% nbgrader={"grade": false, "grade_id": "positional_attention", "locked": false, "schema_version": 3, "solution": true}
def positional_attention(W_pos: Float[Tensor, "n_pos d_model"], W_Q: Float[Tensor, "d_model d_head"],
                         b_Q: Float[Tensor, "d_head"], W_K: Float[Tensor, "d_model d_head"],
                         b_K: Float[Tensor, "d_head"]) -> Float[Tensor, "n_pos n_pos"]:
    """Causal attention pattern of one head when its input is the LayerNorm-normalised positional embeddings."""
    ### BEGIN SOLUTION
    x = normalise_rows(W_pos)
    q, k = x @ W_Q + b_Q, x @ W_K + b_K
    return attention_pattern(attention_scores(q[None, :, None], k[None, :, None]))[0, 0]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_positional_attention", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(positional_attention)

# %% [markdown]
# The positional pattern of the previous-token head over the first 20 positions, and of another layer-0 head.
# You should see the previous-token head put most of each row (over 0.9 on average) on the entry just left of
# the diagonal, and the other head nothing like it (under 0.2 there).

# %%
pos_pattern = positional_attention(model.W_pos, model.W_Q[0, prev_head], model.b_Q[0, prev_head],
                                   model.W_K[0, prev_head], model.b_K[0, prev_head])
print(f"L0H{prev_head}: mean positional attention one step back {pos_pattern.diagonal(-1).mean():.2f}")
other = (prev_head + 1) % cfg.n_heads
fig = plots.attention_pattern(pos_pattern[:20, :20], [""] * 20,
                              title=f"L0H{prev_head} (previous-token head): positional attention")
fig.show()
plots.attention_pattern(positional_attention(model.W_pos, model.W_Q[0, other], model.b_Q[0, other],
                                             model.W_K[0, other], model.b_K[0, other])[:20, :20],
                        [""] * 20, title=f"L0H{other}: positional attention")

# %% [markdown]
# ## Exercise: an OV circuit as a FactoredMatrix
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# The full OV circuit of a head, `W_E W_V W_O W_U` (the paper's `W_U W_OV W_E`), says: if the head attends to a
# token `s`, how much does it raise each output logit? Together with the QK circuit it describes a one-layer
# model as a table of **skip-trigrams** `[s] ... [q] -> [out]`.
#
# Build `ov_circuit(W_E, W_V, W_O, W_U)`: `W_E` is `[d_vocab, d_model]`, `W_V` `[d_model, d_head]`, `W_O`
# `[d_head, d_model]`, `W_U` `[d_model, d_vocab_out]`. Return a `FactoredMatrix` equal to
# `W_E @ W_V @ W_O @ W_U`, **source token rows × output token columns**. It works when
# `ov_circuit(I, W_V, W_O, I).AB` equals `model.OV[layer, head].AB`.
#
# <details><summary>Hint 1</summary>Split the product at the head dimension: <code>A</code> is <code>[d_vocab, d_head]</code>, <code>B</code> is <code>[d_head, d_vocab_out]</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "ov_circuit", "locked": false, "schema_version": 3, "solution": true}
def ov_circuit(W_E: Float[Tensor, "d_vocab d_model"], W_V: Float[Tensor, "d_model d_head"],
               W_O: Float[Tensor, "d_head d_model"], W_U: Float[Tensor, "d_model d_vocab_out"]) -> FactoredMatrix:
    """The full OV circuit W_E W_V W_O W_U ([source token, output token]) as a FactoredMatrix."""
    ### BEGIN SOLUTION
    return FactoredMatrix(W_E @ W_V, W_O @ W_U)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_ov_circuit", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(ov_circuit)

# %% [markdown]
# ## Exercise: the strongest entries of an OV circuit
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# Reading a `[1024, 1024]` table means looking at its largest entries: the pairs "attending to `s` raises
# `out`" the head is most sure of.
#
# Build `top_ov_pairs(ov, k)`: `ov` is a dense `[n_src, n_out]` tensor; return a tuple `(src, out, values)` of
# three `[k]` tensors: the row and column indices of the `k` largest entries of the whole matrix, and the
# entries, largest first. It works when it finds the entries you plant in a matrix of zeros.
#
# <details><summary>Hint 1</summary>Search the flattened matrix (one entry per row is not enough: two of the largest can share a row), then turn flat positions back into (row, column).</details>
# <details><summary>Hint 2</summary><code>Tensor.topk</code>; a flat index <code>i</code> is row <code>i // n_out</code>, column <code>i % n_out</code> (not <code>n_src</code>).</details>

# %% nbgrader={"grade": false, "grade_id": "top_ov_pairs", "locked": false, "schema_version": 3, "solution": true}
def top_ov_pairs(ov: Float[Tensor, "n_src n_out"], k: int) -> tuple[Int[Tensor, "k"], Int[Tensor, "k"], Float[Tensor, "k"]]:
    """(source indices, output indices, values) of the k largest entries of `ov`, largest first."""
    ### BEGIN SOLUTION
    values, flat = ov.flatten().topk(k)
    return flat // ov.shape[1], flat % ov.shape[1], values
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_top_ov_pairs", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(top_ov_pairs)

# %% [markdown]
# The top entries of the strongest induction head's OV circuit, and of the previous-token head. For the
# induction head you should see mostly pairs `s -> s`: attending to a token raises that same token. The
# previous-token head's top pairs are mostly not copies, and hard to read: what it writes is not meant for the
# unembedding but for the layer-1 heads (see "Composition" below).

# %%
for layer, head in [(1, ind_head), (0, prev_head)]:
    ov = ov_circuit(model.W_E, model.W_V[layer, head], model.W_O[layer, head], model.W_U)
    src, out, values = top_ov_pairs(ov.AB, 12)
    pairs = [f"{tokenizer.decode([s])!r}->{tokenizer.decode([o])!r}" for s, o in zip(src.tolist(), out.tolist())]
    diag_top1 = (ov.AB.argmax(-1) == torch.arange(cfg.d_vocab)).float().mean()
    print(f"L{layer}H{head}: {', '.join(pairs)}\n    rows whose largest output is the source token itself: {diag_top1:.0%}")

# %% [markdown]
# ## Exercise: the copying score
# > Difficulty 3/5 · Importance 4/5 · ~15 min
#
# A head that copies has an OV circuit whose eigenvalues are mostly positive: a token's direction is
# (roughly) mapped to a positive multiple of itself. The paper summarises a head by
# `sum(λ) / sum(|λ|)` over the eigenvalues `λ` of its full OV circuit: +1 for pure copying, -1 for pure
# "anti-copying" (section "One-Layer Attention-Only Transformers"). The full circuit is `[d_vocab, d_vocab]`,
# but the nonzero eigenvalues of `AB` are those of `BA`, which is only `[d_head, d_head]`: compute them there
# (a `[16, 16]` eigenproblem instead of a `[1024, 1024]` one).
#
# Build `copying_score(W_E, W_V, W_O, W_U)` (shapes as in `ov_circuit`); return a float. It works when it gives
# +1 for a circuit that maps every direction to itself.
#
# <details><summary>Hint 1</summary><code>ov_circuit(...).eigenvalues</code> already works in the small space; or <code>torch.linalg.eigvals(B @ A)</code>.</details>
# <details><summary>Hint 2</summary>Eigenvalues of a real matrix can be complex: <code>sum(λ)</code> is real (it is a trace), and <code>|λ|</code> is the complex modulus (<code>.abs()</code>), not the absolute value of the real part.</details>

# %% nbgrader={"grade": false, "grade_id": "copying_score", "locked": false, "schema_version": 3, "solution": true}
def copying_score(W_E: Float[Tensor, "d_vocab d_model"], W_V: Float[Tensor, "d_model d_head"],
                  W_O: Float[Tensor, "d_head d_model"], W_U: Float[Tensor, "d_model d_vocab"]) -> float:
    """sum(eigenvalues) / sum(|eigenvalues|) of the full OV circuit W_E W_V W_O W_U, computed in the small space."""
    ### BEGIN SOLUTION
    eigenvalues = ov_circuit(W_E, W_V, W_O, W_U).eigenvalues
    return (eigenvalues.sum().real / eigenvalues.abs().sum()).item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_copying_score", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(copying_score)

# %% [markdown]
# Copying scores of all eight heads (red: positive, copying; blue: negative). The induction heads should be
# close to +1 (above 0.9): they copy the token they attend to, which is what completing `A B ... A -> B` needs.

# %%
copying = torch.tensor([[copying_score(model.W_E, model.W_V[layer, h], model.W_O[layer, h], model.W_U)
                         for h in range(cfg.n_heads)] for layer in range(cfg.n_layers)])
plots.layer_head_grid(copying, title="copying score sum(λ)/sum(|λ|) of the full OV circuit", zmax=1)

# %% [markdown]
# ## Composition
#
# In a two-layer model a layer-1 head can read what a layer-0 head wrote, through three doors (paper,
# section "Two-Layer Attention-Only Transformers"):
# - **Q-composition**: the layer-0 head's output feeds the layer-1 head's queries;
# - **K-composition**: ... its keys;
# - **V-composition**: ... its values.
#
# How much an earlier head's `W_OV` (as `W_A`) lines up with a later head's input matrix (`W_B`) is the
# **composition score** `||W_A W_B||_F / (||W_A||_F ||W_B||_F)`, with `W_B = W_QK` (Q), `W_QK^T` (K) or `W_OV` (V),
# all `[d_model, d_model]` in our row convention (the output of `x W_A` is read by `W_B`).

# %% [markdown]
# ## Exercise: the composition score
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Build `composition_score(W_A, W_B)`: two `[d_model, d_model]` tensors; return the float
# `||W_A @ W_B||_F / (||W_A||_F ||W_B||_F)`. It lies between 0 (what `W_A` writes, `W_B` ignores) and 1. It works
# when two identity matrices of size `d` give `1/sqrt(d)`.
#
# <details><summary>Hint</summary><code>torch.linalg.matrix_norm</code> (or <code>.norm()</code>) is the Frobenius norm by default; order matters: <code>W_A</code> writes, <code>W_B</code> reads.</details>

# %% nbgrader={"grade": false, "grade_id": "composition_score", "locked": false, "schema_version": 3, "solution": true}
def composition_score(W_A: Float[Tensor, "d_model d_model"], W_B: Float[Tensor, "d_model d_model"]) -> float:
    """||W_A W_B||_F / (||W_A||_F ||W_B||_F): how much of what W_A writes W_B reads."""
    ### BEGIN SOLUTION
    return ((W_A @ W_B).norm() / (W_A.norm() * W_B.norm())).item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_composition_score", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(composition_score)

# %% [markdown]
# ## Exercise: Q-, K- and V-composition between every pair of heads
# > Difficulty 3/5 · Importance 5/5 · ~15 min
#
# Build `composition_scores(W_Q, W_K, W_V, W_O)`: each is the model's stacked weights (`W_Q`, `W_K`, `W_V`
# `[n_layers, n_heads, d_model, d_head]`, `W_O` `[n_layers, n_heads, d_head, d_model]`). Return a dict with keys
# `"Q"`, `"K"`, `"V"`, each an `[n_heads, n_heads]` tensor whose entry `[i, j]` is the composition score of
# layer-0 head `i` (as the writer, `W_A = W_V W_O`) with layer-1 head `j`, reading through its queries
# (`W_B = W_Q W_K^T`), keys (`W_B = W_K W_Q^T`) or values (`W_B = W_V W_O`). It works when it matches
# TransformerLens's `model.all_composition_scores(mode).scores[0, :, 1, :]`.
#
# <details><summary>Hint 1</summary>For K-composition the writer's output is what the reader's <b>key</b> side reads: <code>x W_A W_K W_Q^T</code>, i.e. <code>W_B = W_QK^T</code>.</details>
# <details><summary>Hint 2</summary>Two loops over heads and your <code>composition_score</code> are fast enough (16 pairs of 64 × 64 matrices).</details>

# %% nbgrader={"grade": false, "grade_id": "composition_scores", "locked": false, "schema_version": 3, "solution": true}
def composition_scores(W_Q: Float[Tensor, "n_layers n_heads d_model d_head"], W_K: Float[Tensor, "n_layers n_heads d_model d_head"],
                       W_V: Float[Tensor, "n_layers n_heads d_model d_head"],
                       W_O: Float[Tensor, "n_layers n_heads d_head d_model"]) -> dict[str, Float[Tensor, "n_heads n_heads"]]:
    """{"Q", "K", "V"} -> [n_heads (layer-0 writer), n_heads (layer-1 reader)] composition scores."""
    ### BEGIN SOLUTION
    n_heads = W_Q.shape[1]
    scores = {mode: torch.zeros(n_heads, n_heads) for mode in "QKV"}
    for i in range(n_heads):
        W_A = W_V[0, i] @ W_O[0, i]
        for j in range(n_heads):
            W_QK = W_Q[1, j] @ W_K[1, j].T
            scores["Q"][i, j] = composition_score(W_A, W_QK)
            scores["K"][i, j] = composition_score(W_A, W_QK.T)
            scores["V"][i, j] = composition_score(W_A, W_V[1, j] @ W_O[1, j])
    return scores
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_composition_scores", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(composition_scores)

# %% [markdown]
# ## Exercise: a baseline from random matrices
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# Is 0.2 a large composition score? Only compared with what unrelated matrices give. Build the baseline the
# paper suggests: matrices of the same shapes with random entries.
#
# Build `random_composition_baseline(d_model, d_head, n_samples)`: for each sample draw `W_A` and `W_B` each as
# a product of a standard normal `[d_model, d_head]` and a standard normal `[d_head, d_model]` matrix (the shape
# of a `W_V W_O` or a `W_Q W_K^T`); return the mean composition score as a float. It works when two calls agree
# to within 0.01.
#
# <details><summary>Hint 1</summary><code>torch.randn</code> (normal, mean 0), not <code>torch.rand</code> (uniform on [0, 1), all positive).</details>
# <details><summary>Hint 2</summary>A few hundred samples are enough for a stable mean; a batched <code>@</code> on <code>[n_samples, d_model, d_head]</code> tensors is fast.</details>

# %% nbgrader={"grade": false, "grade_id": "random_composition_baseline", "locked": false, "schema_version": 3, "solution": true}
def random_composition_baseline(d_model: int, d_head: int, n_samples: int = 200) -> float:
    """Mean composition score of random low-rank matrices shaped like W_V W_O (Gaussian factors)."""
    ### BEGIN SOLUTION
    def low_rank():
        return torch.randn(n_samples, d_model, d_head) @ torch.randn(n_samples, d_head, d_model)

    W_A, W_B = low_rank(), low_rank()
    norms = torch.linalg.matrix_norm(W_A @ W_B) / (torch.linalg.matrix_norm(W_A) * torch.linalg.matrix_norm(W_B))
    return norms.mean().item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_random_composition_baseline", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(random_composition_baseline)

# %% [markdown]
# ## Which heads compose?
#
# The three score tables, each with the random baseline subtracted, on one colour scale: red cells score above
# the baseline, blue cells below it, white cells at it. Rows are the layer-0 writers, columns the layer-1
# readers. Look at the previous-token head's row in the K table, and at the induction heads' columns.

# %%
comp = composition_scores(model.W_Q, model.W_K, model.W_V, model.W_O)
baseline = random_composition_baseline(cfg.d_model, cfg.d_head, 500)
zmax = max((comp[mode] - baseline).abs().max().item() for mode in "QKV")
for mode in "QKV":
    plots.heatmap(comp[mode] - baseline, x_labels=[f"L1H{h}" for h in range(cfg.n_heads)],
                  y_labels=[f"L0H{h}" for h in range(cfg.n_heads)], x_title="layer-1 head (reader)",
                  y_title="layer-0 head (writer)", title=f"{mode}-composition score minus baseline", zmax=zmax).show()
above = sum(int((comp[mode] > baseline).sum()) for mode in "QKV")
score, mode, i, j = max((comp[m][i, j].item(), m, i, j) for m in "QKV" for i in range(cfg.n_heads) for j in range(cfg.n_heads))
print(f"random baseline: {baseline:.3f}; {above} of the 48 scores are above it; the largest is {mode}-composition "
      f"L0H{i} -> L1H{j} ({score:.3f})")
for h in ind_heads:
    others = max(comp["K"][i, h].item() for i in range(cfg.n_heads) if i != prev_head)
    print(f"induction head L1H{h}: K-composition with the previous-token head L0H{prev_head} {comp['K'][prev_head, h]:.3f}, "
          f"with any other layer-0 head at most {others:.3f}; Q {comp['Q'][prev_head, h]:.3f} and "
          f"V {comp['V'][prev_head, h]:.3f} with L0H{prev_head}")

# %% [markdown]
# What you should see. In each induction head's column of the K table, the previous-token head's cell is the
# largest, more than 1.5 times the next layer-0 head's; the induction heads' Q- and V-composition with the
# previous-token head are below the baseline. That fits the induction circuit.
#
# But the tables are red in many other places too: more than a quarter of the 48 scores are above the baseline,
# and the largest score of all is not a previous-token → induction pair. So read the tables for what they are.
# A composition score says how much of what one head writes lies where another head reads, compared with
# Gaussian matrices of the same shapes. Trained weights are not Gaussian, and pairs of heads that have nothing
# to do with each other can overlap more than random matrices do. Being above the baseline does not say that
# the overlap is used, or for what: the tables rank candidate pairs, they do not identify a circuit.
#
# The control that does: route each layer-1 head's keys through one layer-0 head's OV circuit,
# `W_E W_Q (W_E W_OV^{L0} W_K)^T` (with your `qk_circuit`; LayerNorm's per-position scale is ignored), and ask
# how often the largest entry of a row is on the diagonal, i.e. how often a query token `A` prefers the key
# whose previous token was `A`. Chance is 1 row in 1024. You should see it for the induction heads with the
# keys routed through the previous-token head (more than 90 % of rows), and almost never (under 1 % of rows)
# for any other pair of heads: the other layer-0 heads do not give the induction heads' keys this meaning,
# whatever their composition scores.

# %%
wins = torch.zeros(cfg.n_heads, cfg.n_heads)
for i in range(cfg.n_heads):
    through = model.W_E @ model.W_V[0, i] @ model.W_O[0, i]  # what layer-0 head i writes about each token
    for h in range(cfg.n_heads):
        k_circuit = qk_circuit(model.W_E, through, model.W_Q[1, h], model.W_K[1, h]).AB
        wins[i, h] = (k_circuit.argmax(-1) == torch.arange(cfg.d_vocab)).float().mean()
for h in ind_heads:
    print(f"L1H{h}: rows whose largest entry is on the diagonal, keys through L0H{prev_head} {wins[prev_head, h]:.1%}; "
          f"through any other layer-0 head at most {max(wins[i, h] for i in range(cfg.n_heads) if i != prev_head):.1%}")
plots.heatmap(wins, x_labels=[f"L1H{h}" for h in range(cfg.n_heads)], y_labels=[f"L0H{h}" for h in range(cfg.n_heads)],
              x_title="layer-1 head (its QK circuit)", y_title="layer-0 head (keys routed through its OV circuit)",
              title="fraction of query tokens whose best key follows the same token", diverging=False,
              range_color=[0, 1])

# %% [markdown]
# ### Recap of Part 2
# - With LayerNorm folded, the logits are a sum of paths: the direct path, one term per head, and biases.
#   On repeated tokens the induction heads' terms carry the prediction.
# - The direct path `W_E W_U` is a rough bigram table of the training text.
# - The previous-token head attends by position: its positional QK circuit alone puts most attention one step back.
# - The induction heads' OV circuits copy (copying score near +1, the source token tops most rows).
# - The induction heads' strongest K-composition is with the previous-token head. Composition scores alone do
#   not single the pair out (many unrelated pairs score above the random baseline); the control does: routing
#   the induction heads' keys through the previous-token head, and through no other layer-0 head, turns their
#   QK circuit into "match the token whose predecessor equals mine".
#
# This is the induction circuit of Elhage et al. (2021), found here from the weights of a small model trained
# for about 20 minutes on one CPU thread.
