# %% [markdown]
# # Chapter 2 · Induction heads
#
# An **induction head** completes patterns: having seen `A B` earlier in the context, at the next `A` it
# attends to the `B` and predicts `B` again. Elhage et al. (2021, *A Mathematical Framework for Transformer
# Circuits*, section "Two-Layer Attention-Only Transformers") found them as a circuit of two heads in
# two-layer attention-only models; Olsson et al. (2022, *In-context Learning and Induction Heads*,
# <https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/index.html>) showed that they
# form in a sudden **phase change** early in training, visible as a bump in the loss, and argued that they
# are behind much of the in-context learning of large models.
#
# This chapter finds them, takes them apart, and watches them form:
#
# - **Part 1 · The behaviour.** Repeated random tokens, the loss on each copy, the in-context learning score.
# - **Part 2 · Finding heads by their attention.** Scores for previous-token, current-token, first-token and
#   induction heads; a detector that labels every head; the same code on GPT-2 small.
# - **Part 3 · Hooks.** Scores computed during the forward pass; zero- and mean-ablation; which heads write
#   the answer.
# - **Part 4 · The circuit in the weights.** OV copying, the previous-token head's positional attention,
#   the K-composition circuit, composition scores against a random baseline, and the ablation that removes
#   induction.
# - **Part 5 · Watching them form.** You train a 2-layer attention-only model from scratch on the CPU, log its
#   loss and head scores, and see the phase change; a 1-layer model trained the same way never gets there.
#
# The model for Parts 1-4 is `attn_only_2l`, shipped with the course: 2 layers of 4 attention heads
# (d_model 64, d_head 16), LayerNorm, a byte-level BPE vocabulary of 1024 tokens, context 128; trained on
# English text (Debian's `fortunes`) plus text in which random spans repeat. Chapter 1 reads its weights
# from first principles; this chapter needs only TransformerLens and the ideas of "attention pattern",
# "QK circuit" and "OV circuit".
#
# Every exercise has a visible check (`check(fn)`); graders run more.

# %%
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import FactoredMatrix

import micourse.induction
import micourse.models
import micourse.plots as plots
import micourse.vis as vis
from micourse.checks import check

# %%
torch.set_grad_enabled(False)  # Parts 1-4 only read models; Part 5 trains with gradients on
model = micourse.models.load_model("attn_only_2l")
tokenizer, cfg = model.tokenizer, model.cfg
bos = tokenizer.bos_token_id
print(f"n_layers={cfg.n_layers}, n_heads={cfg.n_heads}, d_model={cfg.d_model}, d_vocab={cfg.d_vocab}, "
      f"n_ctx={cfg.n_ctx}, BOS id={bos}")

# %% [markdown]
# # Part 1 · The behaviour
#
# **Learning objectives**
# - Build the standard test input for induction: a random sequence, then the same sequence again.
# - Measure the loss on each copy, and read the second copy's loss as "the model copies from context".
# - Compute the in-context learning score of Olsson et al. on natural text, with an error bar, and see where
#   in-context learning shows in this small model and where it does not.
#
# Random tokens have no structure a model could have learnt in training, so the first time round the loss is
# about `log(d_vocab)` or worse. The second time, everything needed is in the context: a model with induction
# heads predicts the second copy almost perfectly. This is the cleanest behavioural test for induction (Elhage
# et al. 2021; Olsson et al. 2022 define induction heads by it).

# %% [markdown]
# ## Exercise: repeated random tokens
# > Difficulty 1/5 · Importance 5/5 · ~10 min
#
# Build `generate_repeated_tokens(n_batch, n, d_vocab, bos, seed)`: return an integer tensor
# `[n_batch, 1 + 2 n]`: each row is the BOS token, then `n` tokens drawn uniformly from the `d_vocab - 1` ids
# other than `bos`, then the same `n` tokens again. Draw them with a `torch.Generator` seeded with `seed`, so the
# same seed gives the same batch. It works when each row's two halves are equal and BOS appears only first.
#
# <details><summary>Hint 1</summary>BOS must never appear after position 0, and every other id should stay equally likely. Could you draw from one id fewer, then make room for BOS? (BOS is not always 0: GPT-2's is 50256, the last id.)</details>
# <details><summary>Hint 2</summary><code>torch.randint</code> over <code>d_vocab - 1</code> values (pass <code>generator=</code>), move every id at or above <code>bos</code> up by one, and join a BOS column and the two copies with <code>torch.cat</code> along the position axis.</details>

# %% nbgrader={"grade": false, "grade_id": "generate_repeated_tokens", "locked": false, "schema_version": 3, "solution": true}
def generate_repeated_tokens(n_batch: int, n: int, d_vocab: int, bos: int, seed: int = 0) -> Int[Tensor, "n_batch seq"]:
    """BOS + R + R with R = n uniform random non-BOS tokens per row: shape [n_batch, 1 + 2 n], dtype long."""
    ### BEGIN SOLUTION
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(0, d_vocab - 1, (n_batch, n), generator=gen)
    r = r + (r >= bos).long()  # skip the BOS id
    return torch.cat([torch.full((n_batch, 1), bos, dtype=torch.long), r, r], dim=1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_generate_repeated_tokens", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(generate_repeated_tokens)

# %% [markdown]
# TransformerLens gives the loss at every position directly: `model(tokens, return_type="loss",
# loss_per_token=True)` returns `[batch, pos - 1]`, whose entry `p` is the loss of predicting token `p + 1`
# from the tokens up to `p`.

# %%
N_REP = 50
rep_tokens = generate_repeated_tokens(16, N_REP, cfg.d_vocab, bos, seed=0)
rep_loss = model(rep_tokens, return_type="loss", loss_per_token=True)
print(rep_tokens.shape, rep_loss.shape)
print(model.to_str_tokens(rep_tokens[0, :8]))

# %% [markdown]
# ## Exercise: the loss on each copy
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# In `BOS + R + R` the first token of each copy is unpredictable (nothing says which random token comes
# next), so compare the copies on the other `n - 1` tokens, `R[1] ... R[n-1]`.
#
# Build `loss_on_each_copy(loss_per_token, n)`: `loss_per_token` is `[batch, 2 n]` as returned by TransformerLens
# for `BOS + R + R`; return a tensor of 2 numbers: the mean loss (over the batch and those `n - 1` tokens) on the
# first copy, then on the second. It works when it picks exactly the positions of a hand-made example.
#
# <details><summary>Hint 1</summary>Entry <code>p</code> of the loss predicts token <code>p + 1</code>. Where does <code>R[i]</code> sit in each copy, and which loss index predicts it?</details>
# <details><summary>Hint 2</summary>Loss index <code>i</code> is the loss of predicting the token at position <code>i + 1</code>. Work out which loss indices predict <code>R[1] ... R[n-1]</code> in each copy, then slice the loss's position axis (a slice leaves out its stop), take <code>.mean()</code> of each, and <code>torch.stack</code> the two.</details>

# %% nbgrader={"grade": false, "grade_id": "loss_on_each_copy", "locked": false, "schema_version": 3, "solution": true}
def loss_on_each_copy(loss_per_token: Float[Tensor, "batch two_n"], n: int) -> Float[Tensor, "2"]:
    """[mean loss predicting R[1:] in the first copy, mean loss predicting R[1:] in the second copy]."""
    ### BEGIN SOLUTION
    return torch.stack([loss_per_token[:, 1:n].mean(), loss_per_token[:, n + 1:].mean()])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_loss_on_each_copy", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(loss_on_each_copy)

# %% [markdown]
# What you should see: a first-copy loss above `log(1024) ≈ 6.9` nats (the model knows nothing about random
# tokens, and does a little worse than uniform because it expects text), and a second-copy loss below 2 nats.
# The plot shows the loss by position: above 6 nats all through the first copy, then a cliff one token *after*
# the repeat's first predictable token. Predicting `R[1]` the second time still costs more than 5 nats: the
# induction head would need the key at position 2 to say "the token before me was `R[0]`", but no layer-0 head puts
# even half of its attention from position 2 on position 1 (printed below; at later positions the previous-token
# head looks one back almost always), so that one key never learns it. From `R[2]` on, the loss averages below 1 nat (`R[2]` itself can still cost a
# little more; the printout gives the mean).

# %%
first, second = loss_on_each_copy(rep_loss, N_REP)
print(f"loss on the first copy {first:.2f} nats, on the second copy {second:.2f} nats")
print(f"predicting R[1] the second time: {rep_loss[:, N_REP + 1].mean():.2f} nats; R[2:] the second time: "
      f"{rep_loss[:, N_REP + 2:].mean():.2f} nats")
_, layer0 = model.run_with_cache(rep_tokens, names_filter="blocks.0.attn.hook_pattern")
look_back = layer0["pattern", 0].diagonal(-1, -2, -1).mean(0)  # [head, query - 1]: attention from q to q - 1
print("layer-0 heads' attention from position 2 to 1:", [round(v, 2) for v in look_back[:, 1].tolist()],
      "; from positions 3+ to the one before:", [round(v, 2) for v in look_back[:, 2:].mean(-1).tolist()])
plots.lines(rep_loss.mean(0), x=torch.arange(1, 2 * N_REP + 1), title="Loss by position on BOS + R + R",
            x_title="position of the predicted token", y_title="loss (nats)")

# %% [markdown]
# ## Exercise: the in-context learning score
# > Difficulty 1/5 · Importance 3/5 · ~10 min
#
# Does more context help on ordinary text too? Olsson et al. (2022) summarise in-context learning by one number,
# the *in-context learning score*: the loss on the 500th token of the context minus the loss on the 50th, averaged
# over many texts. Negative means the model does better with more context; induction heads are one way to get
# there. Our model's context is only 128 tokens, so the chapter adapts the score: it keeps the tenfold ratio
# (about 10 tokens of context against about 100), and because one position per text is a noisy measurement, it
# averages over a **band** of positions on each side: loss indices 8-15 (early) and 96-126 (late, to the end of the
# window).
#
# Build `in_context_learning_score(loss_per_token, early, late)`: `loss_per_token` is `[batch, pos - 1]`; `early` and
# `late` are `(start, stop)` pairs of loss indices, read like Python slices (`stop` is left out). Return the float
# `mean of loss_per_token over the batch and the late band` minus the same over the early band. It works when a
# loss that falls along the context gives a negative score, and a band `(a, b)` covers exactly indices `a ... b - 1`.
#
# <details><summary>Hint 1</summary>Which way round? More context should help, so a model that learns in context
# should score below 0. Each band is a stretch of the position axis, the last one.</details>
# <details><summary>Hint 2</summary>Slice the position axis with each band's start and stop, take the mean of each
# slice, subtract, and use <code>.item()</code> to turn the 0-d tensor into a float.</details>

# %% nbgrader={"grade": false, "grade_id": "in_context_learning_score", "locked": false, "schema_version": 3, "solution": true}
def in_context_learning_score(loss_per_token: Float[Tensor, "batch pos_minus_1"], early: tuple[int, int],
                              late: tuple[int, int]) -> float:
    """Mean loss over loss indices late[0] .. late[1] - 1 minus mean loss over early[0] .. early[1] - 1 (and the batch)."""
    ### BEGIN SOLUTION
    late_loss = loss_per_token[:, late[0]:late[1]].mean()
    early_loss = loss_per_token[:, early[0]:early[1]].mean()
    return (late_loss - early_loss).item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_in_context_learning_score", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(in_context_learning_score)

# %% [markdown]
# We measure the score on the 200 windows of held-out text shipped with the model (fortunes the model never saw in
# training), and give it an error bar: a **bootstrap** 95 % interval. The texts are the unit of measurement, so we
# draw 200 texts with replacement, compute the score of that resample with your function, repeat 1000 times, and
# keep the middle 95 % of the scores. If the interval includes 0, these 200 texts cannot tell the model's score
# from no in-context learning at all.
#
# For comparison, the same measurement where in-context learning *must* pay off: the same texts with their first 63
# tokens repeated (`BOS + T + T`; the late band is the early band's positions in the second copy), and the repeated
# random tokens from above (likewise).

# %%
def bootstrap_interval(statistic, loss_per_token, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of statistic(rows of loss_per_token), resampling the rows (the texts) with replacement."""
    gen = torch.Generator().manual_seed(seed)
    n = loss_per_token.shape[0]
    values = torch.tensor([statistic(loss_per_token[torch.randint(0, n, (n,), generator=gen)])
                           for _ in range(n_resamples)])
    return values.quantile(0.025).item(), values.quantile(0.975).item()


ICL_EARLY, ICL_LATE = (8, 16), (96, 127)
text_tokens = torch.load(micourse.models.asset_dir("attn_only_2l") / "text_sample.pt").long()
text_loss = model(text_tokens, return_type="loss", loss_per_token=True)
half = text_tokens[:, 1:64]                                       # T: the first 63 tokens of each window
text_twice = torch.cat([text_tokens[:, :1], half, half], dim=1)   # BOS + T + T
twice_loss = model(text_twice, return_type="loss", loss_per_token=True)
settings = {
    "held-out text": (text_loss, ICL_EARLY, ICL_LATE),
    "the same text, repeated": (twice_loss, ICL_EARLY, (63 + ICL_EARLY[0], 63 + ICL_EARLY[1])),
    "repeated random tokens": (rep_loss, ICL_EARLY, (N_REP + ICL_EARLY[0], N_REP + ICL_EARLY[1])),
}
for name, (loss, early, late) in settings.items():
    score = in_context_learning_score(loss, early, late)
    low, high = bootstrap_interval(lambda rows: in_context_learning_score(rows, early, late), loss)
    print(f"{name:24s} in-context learning score {score:+.2f} nats, 95 % interval [{low:+.2f}, {high:+.2f}]")
print("mean loss on held-out text by band of loss indices:",
      {f"{a}-{b - 1}": round(text_loss[:, a:b].mean().item(), 2) for a, b in [(0, 1), (1, 4), (4, 16), (16, 32), (32, 64), (64, 127)]})
plots.lines(torch.stack([text_loss.mean(0)[:126], twice_loss.mean(0)]), x=torch.arange(1, 127),
            names=["held-out text", "the same text, repeated (BOS + T + T)"], title="Mean loss by position",
            x_title="position of the predicted token", y_title="loss (nats)")

# %% [markdown]
# What you should see. On held-out text the loss falls steeply at the very start (predicting the first token from
# BOS alone costs more than a nat more than predicting the next three) and is flat after that: the mean loss of
# each band from index 4 on is within 0.2 nats of the others. The band score is small (between -0.3 and +0.1 nats)
# and its 95 % interval includes 0, if only just: **on this text, this model shows no in-context learning beyond the
# first few tokens that 200 texts can tell from none**; if it is there, it is a fraction of a nat. That is not
# surprising. The windows are cut from a stream of short fortunes (about 75 tokens each, separated by end-of-text
# tokens), so a late token rarely has more *relevant* context than an early one; and a 2-layer attention-only model
# has little to use context for beyond copying. Where copying pays, the effect is plain: on the same texts repeated
# the score is below -0.5 nats with its whole interval below 0, and on repeated random tokens it is below -5 nats.

# %% [markdown]
# ### Recap of Part 1
# - On `BOS + R + R` the model cannot predict the first copy and predicts the second almost perfectly (from its
#   second token on): it copies from its context.
# - On held-out text, more context helps only over the first few tokens; the in-context learning score, adapted to a
#   128-token context and given a bootstrap interval, cannot be told from 0. On repeated text it is clearly negative.

# %% [markdown]
# # Part 2 · Finding heads by their attention
#
# **Learning objectives**
# - Score every head for four positional habits: previous-token, current-token, first-token, induction.
# - Turn the scores into a detector that labels every head, and look at the heads it finds.
# - Run the same code on GPT-2 small.
#
# Many heads have a habit you can see in their attention pattern `[query, key]` (Elhage et al. 2021; ARENA's
# and TransformerLens's head detectors use the same idea):
# - a **previous-token head** attends from each position to the one before it (the diagonal just below the main one);
# - a **current-token head** attends to itself (the main diagonal);
# - a **first-token head** attends to position 0, the BOS token: many heads park attention there when they have
#   nothing to do;
# - an **induction head**, on `BOS + R + R`, attends from each token of the second copy to the token *after* its
#   earlier occurrence: from position `q` to `q - n + 1`.
#
# Each score below is the mean over the batch and over query positions `1, 2, ...` of the attention on one
# key per query (position 0 is left out: there the only key is itself). Patterns are `[batch, n_heads,
# q_pos, k_pos]`, as in `cache["pattern", layer]`; each score function returns `[n_heads]`.

# %% [markdown]
# ## Exercise: previous-token score
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Build `previous_token_score(pattern)`: the mean of `pattern[b, h, q, q - 1]` over the batch and `q = 1 ...
# pos - 1`, per head. It works when a pattern that always attends one step back scores 1.
#
# <details><summary>Hint 1</summary>The entries <code>pattern[..., q, q - 1]</code> for all <code>q</code> form one line in the <code>[query, key]</code> square. Which line, and can you take it out for every batch and head at once?</details>
# <details><summary>Hint 2</summary><code>Tensor.diagonal</code> with a negative <code>offset</code> and <code>dim1=-2, dim2=-1</code> (without those it takes the batch and head axes), then <code>.mean</code> over the batch and the new last axis.</details>

# %% nbgrader={"grade": false, "grade_id": "previous_token_score", "locked": false, "schema_version": 3, "solution": true}
def previous_token_score(pattern: Float[Tensor, "batch n_heads q_pos k_pos"]) -> Float[Tensor, "n_heads"]:
    """Mean attention from each query q >= 1 to key q - 1, per head."""
    ### BEGIN SOLUTION
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_previous_token_score", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(previous_token_score)

# %% [markdown]
# ## Exercise: current-token score
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# Build `current_token_score(pattern)`: the mean of `pattern[b, h, q, q]` over the batch and `q = 1 ... pos - 1`
# (not `q = 0`, where every head must attend to itself). It works when a pattern that spreads attention evenly
# over the past scores `mean(1 / (q + 1))`.
#
# <details><summary>Hint 1</summary>This is the main diagonal of the <code>[query, key]</code> square; query 0 is left out, because there a head has no choice.</details>
# <details><summary>Hint 2</summary><code>diagonal</code> of the last two axes at offset 0, without its first entry, then <code>.mean</code> over the batch and the queries.</details>

# %% nbgrader={"grade": false, "grade_id": "current_token_score", "locked": false, "schema_version": 3, "solution": true}
def current_token_score(pattern: Float[Tensor, "batch n_heads q_pos k_pos"]) -> Float[Tensor, "n_heads"]:
    """Mean attention from each query q >= 1 to itself, per head."""
    ### BEGIN SOLUTION
    return pattern.diagonal(offset=0, dim1=-2, dim2=-1)[..., 1:].mean(dim=(0, -1))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_current_token_score", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(current_token_score)

# %% [markdown]
# ## Exercise: first-token score
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# Build `first_token_score(pattern)`: the mean of `pattern[b, h, q, 0]` over the batch and `q = 1 ... pos - 1`.
# It works when a pattern that always attends to BOS scores 1.
#
# <details><summary>Hint 1</summary>Attention from every query to key 0 is a column of the <code>[query, key]</code> square, not a diagonal. Which queries count?</details>
# <details><summary>Hint 2</summary>Index the key axis at 0 and the query axis from 1 on, then <code>.mean</code> over the batch and the queries.</details>

# %% nbgrader={"grade": false, "grade_id": "first_token_score", "locked": false, "schema_version": 3, "solution": true}
def first_token_score(pattern: Float[Tensor, "batch n_heads q_pos k_pos"]) -> Float[Tensor, "n_heads"]:
    """Mean attention from each query q >= 1 to key 0 (the BOS token), per head."""
    ### BEGIN SOLUTION
    return pattern[..., 1:, 0].mean(dim=(0, -1))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_first_token_score", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(first_token_score)

# %% [markdown]
# ## Exercise: induction score
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# On `BOS + R + R` (`pos = 1 + 2 n`), the token at position `q` of the second copy (`q = n + 1 ... 2 n`) occurred
# before at `q - n`; the token that followed it there sits at `q - n + 1`. An induction head attends there.
#
# Build `induction_score(pattern, n)`: the mean of `pattern[b, h, q, q - n + 1]` over the batch and the second
# copy's queries `q = n + 1 ... 2 n`, per head. A head scoring above 0.4 is commonly called an induction head.
# It works when a pattern built to attend exactly there scores 1.
#
# <details><summary>Hint 1</summary>Query <code>q</code> attends to key <code>q - n + 1</code>: a diagonal at a fixed offset. Does that diagonal begin at the first query you want?</details>
# <details><summary>Hint 2</summary><code>diagonal</code> of the last two axes with <code>offset=1 - n</code> starts at query <code>n - 1</code>: leave out its entries for queries <code>n - 1</code> and <code>n</code>. (Offset <code>-n</code> would be the token's own earlier copy, a "duplicate-token" head.)</details>

# %% nbgrader={"grade": false, "grade_id": "induction_score", "locked": false, "schema_version": 3, "solution": true}
def induction_score(pattern: Float[Tensor, "batch n_heads q_pos k_pos"], n: int) -> Float[Tensor, "n_heads"]:
    """Mean attention from second-copy queries q = n+1 .. 2n to key q - n + 1, per head (pattern on BOS + R + R)."""
    ### BEGIN SOLUTION
    return pattern.diagonal(offset=1 - n, dim1=-2, dim2=-1)[..., 2:].mean(dim=(0, -1))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_induction_score", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(induction_score)

# %% [markdown]
# ## Exercise: every score of every head
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Build `head_score_table(model, tokens)`: `tokens` is a batch of `BOS + R + R` (so `n = (pos - 1) // 2`). Run
# the model once, caching only the attention patterns, and return `[4, n_layers, n_heads]`: the previous-token,
# current-token, first-token and induction scores (in that order, as in `HEAD_KINDS`) of every head. It works
# when it agrees with your four functions applied to `cache["pattern", layer]`.
#
# <details><summary>Hint 1</summary>One forward pass gives every layer's pattern, and you need nothing else from it. <code>n</code> follows from the sequence length.</details>
# <details><summary>Hint 2</summary><code>model.run_with_cache</code> with a <code>names_filter</code> that keeps only the <code>hook_pattern</code>s; <code>cache["pattern", layer]</code>; <code>torch.stack</code> the four scores of a layer, then the layers on <code>dim=1</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "head_score_table", "locked": false, "schema_version": 3, "solution": true}
HEAD_KINDS = ("previous-token", "current-token", "first-token", "induction")


def head_score_table(model, tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "4 n_layers n_heads"]:
    """The four scores (HEAD_KINDS order) of every head of `model` on BOS + R + R `tokens`."""
    ### BEGIN SOLUTION
    n = (tokens.shape[1] - 1) // 2
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    per_layer = []
    for layer in range(model.cfg.n_layers):
        pattern = cache["pattern", layer]
        per_layer.append(torch.stack([previous_token_score(pattern), current_token_score(pattern),
                                      first_token_score(pattern), induction_score(pattern, n)]))
    return torch.stack(per_layer, dim=1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_head_score_table", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(head_score_table)

# %% [markdown]
# ## Exercise: a head detector
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# Build `label_heads(table, threshold)`: `table` is `[4, n_layers, n_heads]` from `head_score_table`; return a
# list (one per layer) of lists (one per head) of strings: the `HEAD_KINDS` name of the head's **highest** score
# if that score is at least `threshold`, otherwise `"none"`. It works when a head scoring 0.5 previous-token and
# 0.7 induction is labelled `"induction"` at threshold 0.4.
#
# <details><summary>Hint 1</summary>For each head you need two things: its best score, and which kind that score is. A score exactly at the threshold counts.</details>
# <details><summary>Hint 2</summary><code>table.max(dim=0)</code> returns both (values and indices) for every head at once; map each index through <code>HEAD_KINDS</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "label_heads", "locked": false, "schema_version": 3, "solution": true}
def label_heads(table: Float[Tensor, "4 n_layers n_heads"], threshold: float = 0.4) -> list[list[str]]:
    """labels[layer][head]: HEAD_KINDS name of the head's best score if >= threshold, else "none"."""
    ### BEGIN SOLUTION
    best, kind = table.max(dim=0)
    return [[HEAD_KINDS[int(kind[layer, head])] if best[layer, head] >= threshold else "none"
             for head in range(table.shape[2])] for layer in range(table.shape[1])]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_label_heads", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(label_heads)

# %% [markdown]
# The detector on the shipped model. You should see one layer-0 head labelled previous-token and at least one
# layer-1 head labelled induction, each scoring at least 0.4.

# %%
table = head_score_table(model, rep_tokens)
labels = label_heads(table, 0.4)
for layer in range(cfg.n_layers):
    for head in range(cfg.n_heads):
        scores = ", ".join(f"{kind} {table[k, layer, head]:.2f}" for k, kind in enumerate(HEAD_KINDS))
        print(f"L{layer}H{head}: {labels[layer][head]:15s} ({scores})")
prev_head = int(table[0, 0].argmax())
ind_heads = [h for h in range(cfg.n_heads) if labels[1][h] == "induction"]
ind_head = int(table[3, 1].argmax())
print(f"previous-token head L0H{prev_head}; induction heads {[f'L1H{h}' for h in ind_heads]}")
plots.heatmap(table.flatten(1), x_labels=[f"L{layer}H{h}" for layer in range(cfg.n_layers) for h in range(cfg.n_heads)],
              y_labels=HEAD_KINDS, title="Head scores on BOS + R + R", diverging=False, range_color=[0, 1])

# %% [markdown]
# The heads the detector found, on a short repeated sequence (choose a head, then hover a token). The
# previous-token head draws the line just below the diagonal; the induction heads draw a line `n - 1` below it,
# from where the repeat begins.

# %%
short = generate_repeated_tokens(1, 10, cfg.d_vocab, bos, seed=1)
_, short_cache = model.run_with_cache(short, names_filter=lambda name: name.endswith("hook_pattern"))
found = [(0, prev_head)] + [(1, h) for h in ind_heads]
vis.attention_heads(torch.stack([short_cache["pattern", layer][0, head] for layer, head in found]),
                    model.to_str_tokens(short[0]), head_names=[f"L{layer}H{head} ({labels[layer][head]})" for layer, head in found])

# %% [markdown]
# ## The same code on GPT-2 small
#
# Wang et al. (2022, *Interpretability in the Wild*, arXiv 2211.00593) list GPT-2 small's induction heads as
# **5.5, 5.8, 5.9 and 6.9**, fed by previous-token heads such as 2.2 and 4.11.
# Nothing in your functions is specific to our small model: the next cell loads GPT-2 small when you are online
# and runs the detector on it (BOS is 50256 there, the last id). Offline, and in CI, `load_model` says so and
# loads the shipped `attn_only_2l` instead, and the cell repeats the analysis above on it: the numbers printed
# are then our model's, not GPT-2's.

# %%
gpt2 = micourse.models.load_model("gpt2", offline_alternative="attn_only_2l")
g_tokens = generate_repeated_tokens(4, 50, gpt2.cfg.d_vocab, gpt2.tokenizer.bos_token_id, seed=2)
g_table = head_score_table(gpt2, g_tokens)
g_labels = label_heads(g_table, 0.4)
g_found = [(layer, h) for layer in range(gpt2.cfg.n_layers) for h in range(gpt2.cfg.n_heads) if g_labels[layer][h] == "induction"]
print(f"{gpt2.course_name}: induction heads (score >= 0.4): "
      + ", ".join(f"{layer}.{h} ({g_table[3, layer, h]:.2f})" for layer, h in g_found))
plots.layer_head_grid(g_table[3], title=f"Induction scores of {gpt2.course_name}", diverging=False, range_color=[0, 1])

# %% [markdown]
# Online you should find 5.5 and 6.9 among the heads labelled induction: two of GPT-2 small's published induction
# heads (Wang et al. 2022 list 5.5, 5.8, 5.9 and 6.9). This is the paper's result; the course checks it only in a
# test that needs the model hub (`@pytest.mark.online`), because its tests run offline. Offline you see the shipped
# model's induction heads again.

# %% [markdown]
# ### Recap of Part 2
# - Four one-number summaries of attention patterns label most heads that matter here; the shipped model has one
#   previous-token head in layer 0 and induction heads in layer 1.
# - The same code runs on GPT-2 small, where (online) it should find the published induction heads.

# %% [markdown]
# # Part 3 · Hooks
#
# **Learning objectives**
# - Compute a score inside the forward pass with a hook, without caching activations.
# - Zero- and mean-ablate one head by editing its output `z` in a hook, and measure what that does to the loss.
# - Attribute the correct-token logit to each head (direct logit attribution).
#
# A hook is a function `hook_fn(activation, hook)` that TransformerLens calls when the forward pass reaches a
# hook point (`blocks.1.attn.hook_pattern`, `blocks.0.attn.hook_z`, ...). It may read the activation, or return
# a changed one that the rest of the pass then uses. `model.run_with_hooks(tokens, fwd_hooks=[(name, hook_fn)])`
# runs the model with hooks attached for one pass; the name may also be a function `name -> bool`, and
# `hook.layer()` tells the hook which layer it is in.

# %% [markdown]
# ## Exercise: induction scores from a hook
# > Difficulty 2/5 · Importance 4/5 · ~15 min
#
# A cache of a large model on long sequences is big. Computing the score where the pattern is made, and keeping
# only the score, costs nothing.
#
# Build `induction_scores_with_hooks(model, tokens)`: on `BOS + R + R` tokens, return `[n_layers, n_heads]`
# induction scores, computed inside hooks on every layer's `hook_pattern` (no `run_with_cache`). Use
# `return_type=None`: we don't need the logits. It works when it equals the induction row of `head_score_table`.
#
# <details><summary>Hint 1</summary>A hook cannot return the score to you: it has to leave it somewhere your function can read after the pass. How does the hook know which layer it is in?</details>
# <details><summary>Hint 2</summary>Fill a tensor made before the pass, at row <code>hook.layer()</code>, with your <code>induction_score</code>; give <code>model.run_with_hooks</code> a <code>fwd_hooks</code> entry whose name is a function of the hook's name, picking every <code>hook_pattern</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "induction_scores_with_hooks", "locked": false, "schema_version": 3, "solution": true}
def induction_scores_with_hooks(model, tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "n_layers n_heads"]:
    """Induction score of every head on BOS + R + R, computed by hooks on hook_pattern during one forward pass."""
    ### BEGIN SOLUTION
    n = (tokens.shape[1] - 1) // 2
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)

    def score_hook(pattern, hook):
        scores[hook.layer()] = induction_score(pattern.detach(), n)

    with torch.no_grad():
        model.run_with_hooks(tokens, return_type=None,
                             fwd_hooks=[(lambda name: name.endswith("hook_pattern"), score_hook)])
    return scores
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_induction_scores_with_hooks", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(induction_scores_with_hooks)

# %%
plots.layer_head_grid(induction_scores_with_hooks(model, rep_tokens), title="Induction scores, computed in hooks",
                      diverging=False, range_color=[0, 1])

# %% [markdown]
# ## Ablation
#
# To test whether a head matters, remove it and see what breaks. A head's output at every position is its `z`
# (`[batch, pos, n_heads, d_head]`, the attention-weighted values before `W_O`); editing `hook_z` removes the head's
# contribution and nothing else (Olsson et al. 2022 "knock out" induction heads at test time; Wang et al. 2022
# mean-ablate). Two common choices:
# - **zero-ablation** sets the head's `z` to 0: simple, but 0 may be a value the head never outputs;
# - **mean-ablation** replaces it by its mean over a batch (per position): the head still writes its typical output,
#   but nothing that depends on the particular input.

# %% [markdown]
# ## Exercise: zero-ablate a head
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# Build `zero_ablate_head_z(z, head)`: `z` is `[batch, pos, n_heads, d_head]`; return a **new** tensor equal to `z`
# except that head `head` is 0 at every position. Don't change `z` itself: return the new one (a hook that returns
# a tensor replaces the activation). It works when the other heads are untouched.
#
# <details><summary>Hint 1</summary>The head axis is the third of <code>[batch, pos, n_heads, d_head]</code>. And the caller's <code>z</code> must come out of your function as it went in.</details>
# <details><summary>Hint 2</summary>Change a copy (<code>Tensor.clone</code>), not <code>z</code>; or multiply by a 0/1 mask over the head axis, which makes a new tensor anyway.</details>

# %% nbgrader={"grade": false, "grade_id": "zero_ablate_head_z", "locked": false, "schema_version": 3, "solution": true}
def zero_ablate_head_z(z: Float[Tensor, "batch pos n_heads d_head"], head: int) -> Float[Tensor, "batch pos n_heads d_head"]:
    """A copy of z with head `head` set to 0 at every position."""
    ### BEGIN SOLUTION
    z = z.clone()
    z[:, :, head] = 0.0
    return z
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_zero_ablate_head_z", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(zero_ablate_head_z)

# %% [markdown]
# ## Exercise: mean-ablate a head
# > Difficulty 2/5 · Importance 4/5 · ~5 min
#
# Build `mean_ablate_head_z(z, head, z_mean)`: `z_mean` is `[pos, n_heads, d_head]`, the mean of `z` over some batch
# of inputs (often `z.mean(0)` of a clean run, but it may come from another batch: use the `z_mean` you are given);
# return a new tensor equal to `z` except that head `head` at position `p` is `z_mean[p, head]`, for every sequence
# of the batch, and leave `z` itself unchanged. It works when the ablated head's output is the same in every sequence.
#
# <details><summary>Hint 1</summary>Which axes does <code>z_mean[:, head]</code> have, and along which axis of <code>z</code> must it be repeated? Keep positions apart: a mean over positions would erase positional information.</details>
# <details><summary>Hint 2</summary>Work on <code>z.clone()</code>; assigning a <code>[pos, d_head]</code> tensor to one head's <code>[batch, pos, d_head]</code> slice broadcasts it over the batch.</details>

# %% nbgrader={"grade": false, "grade_id": "mean_ablate_head_z", "locked": false, "schema_version": 3, "solution": true}
def mean_ablate_head_z(z: Float[Tensor, "batch pos n_heads d_head"], head: int,
                       z_mean: Float[Tensor, "pos n_heads d_head"]) -> Float[Tensor, "batch pos n_heads d_head"]:
    """A copy of z with head `head` replaced by its batch mean z_mean[:, head] at every position."""
    ### BEGIN SOLUTION
    z = z.clone()
    z[:, :, head] = z_mean[:, head]
    return z
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_mean_ablate_head_z", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(mean_ablate_head_z)

# %% [markdown]
# ## Exercise: the loss on each copy with a head ablated
# > Difficulty 3/5 · Importance 5/5 · ~15 min
#
# Build `ablated_copy_losses(model, tokens, layer, head, mode)`: on `BOS + R + R` tokens, ablate head `head` of
# layer `layer` through a hook on `blocks.{layer}.attn.hook_z` (`mode` is `"zero"` or `"mean"`; for `"mean"`, the
# mean of that layer's `z` over **this** batch of tokens, from a clean run) and return `loss_on_each_copy` of the
# ablated model's per-token loss: `[first-copy loss, second-copy loss]`. It works when ablating a head that
# matters raises the second-copy loss, and a mean-ablation of an input-independent head changes nothing.
#
# <details><summary>Hint 1</summary>"mean" needs two passes: a clean one for this batch's <code>z</code> at that layer, then the ablated one. The hook itself only calls your ablation function.</details>
# <details><summary>Hint 2</summary><code>model.run_with_cache</code> (with <code>names_filter</code>) and <code>.mean(0)</code> for the clean mean; then <code>model.run_with_hooks</code> with <code>return_type="loss"</code>, <code>loss_per_token=True</code> and a hook on <code>blocks.{layer}.attn.hook_z</code>; finish with your <code>loss_on_each_copy</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "ablated_copy_losses", "locked": false, "schema_version": 3, "solution": true}
def ablated_copy_losses(model, tokens: Int[Tensor, "batch seq"], layer: int, head: int, mode: str = "zero") -> Float[Tensor, "2"]:
    """[first-copy loss, second-copy loss] on BOS + R + R with one head zero- or mean-ablated at hook_z."""
    ### BEGIN SOLUTION
    n = (tokens.shape[1] - 1) // 2
    name = f"blocks.{layer}.attn.hook_z"
    if mode == "mean":
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=name)
        z_mean = cache[name].mean(0)
        hook_fn = lambda z, hook: mean_ablate_head_z(z, head, z_mean)
    elif mode == "zero":
        hook_fn = lambda z, hook: zero_ablate_head_z(z, head)
    else:
        raise ValueError(f"mode must be 'zero' or 'mean', not {mode!r}")
    with torch.no_grad():
        loss = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=[(name, hook_fn)])
    return loss_on_each_copy(loss, n)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_ablated_copy_losses", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(ablated_copy_losses)

# %% [markdown]
# The second-copy loss with each head ablated in turn, minus the clean second-copy loss. You should see the
# previous-token head and the induction heads stand out: the loss rises by well over a nat for each induction
# head and by several nats for the previous-token head, while no other head moves it by half a nat; zero- and
# mean-ablation agree on which heads matter.

# %%
clean_second = loss_on_each_copy(rep_loss, N_REP)[1]
increase = torch.stack([torch.tensor([[ablated_copy_losses(model, rep_tokens, layer, head, mode)[1] - clean_second
                                       for head in range(cfg.n_heads)] for layer in range(cfg.n_layers)])
                        for mode in ("zero", "mean")])
for i, mode in enumerate(("zero", "mean")):
    plots.layer_head_grid(increase[i], title=f"Second-copy loss increase when a head is {mode}-ablated (nats)").show()

# %% [markdown]
# ## Exercise: which heads write the answer
# > Difficulty 3/5 · Importance 4/5 · ~15 min
#
# Ablation says a head is needed; **direct logit attribution** says which heads write the prediction
# themselves. With LayerNorm folded into the weights (`enable_compatibility_mode()`), the final LayerNorm only
# centres the residual stream and divides it by a scale (`cache["ln_final.hook_scale"]`, `[batch, pos, 1]`). Freeze
# that scale, and the logits are a sum of one term per component; head `h` of layer `l` contributes
# `(z[l][:, p, h] @ W_O[l, h]) / scale[:, p] @ W_U[:, t]` to the logit of token `t` at position `p` (its output is
# already centred, because compatibility mode centres `W_O`).
#
# Build `head_logit_attribution(z, W_O, W_U, ln_scale, tokens, n)`: `z` is every layer's `z` stacked
# `[n_layers, batch, pos, n_heads, d_head]`, `W_O` is `[n_layers, n_heads, d_head, d_model]`, `W_U` is
# `[d_model, d_vocab]`, `ln_scale` is `[batch, pos, 1]`, `tokens` is `BOS + R + R`. Return `[n_layers, n_heads]`:
# each head's contribution to the logit of the **correct next token**, averaged over the batch and the positions
# that predict the second copy's `R[1:]` (positions `n + 1 ... 2 n - 1`). It works when it matches TransformerLens's
# `cache.stack_head_results(apply_ln=True)` projected onto the correct tokens' unembedding.
#
# <details><summary>Hint 1</summary>Three steps: each head's output in the residual stream (<code>z</code> through its <code>W_O</code>), divided by the frozen scale, then dotted with the unembedding column of the token that comes <i>next</i>. Which positions predict the second copy's <code>R[1:]</code>?</details>
# <details><summary>Hint 2</summary><code>torch.einsum</code> for every head's <code>z W_O</code> at once; index the columns of <code>W_U</code> with <code>tokens[:, 1:]</code> to pair position <code>p</code> with token <code>p + 1</code>; average over the batch and positions <code>n + 1 ... 2n - 1</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "head_logit_attribution", "locked": false, "schema_version": 3, "solution": true}
def head_logit_attribution(z: Float[Tensor, "n_layers batch pos n_heads d_head"],
                           W_O: Float[Tensor, "n_layers n_heads d_head d_model"], W_U: Float[Tensor, "d_model d_vocab"],
                           ln_scale: Float[Tensor, "batch pos 1"], tokens: Int[Tensor, "batch pos"],
                           n: int) -> Float[Tensor, "n_layers n_heads"]:
    """Each head's mean direct contribution to the correct next-token logit on the second copy (positions n+1..2n-1)."""
    ### BEGIN SOLUTION
    results = torch.einsum("lbphe,lhed->lbphd", z, W_O) / ln_scale[None, :, :, :, None]
    directions = W_U[:, tokens[:, 1:]]  # [d_model, batch, pos - 1]
    attribution = torch.einsum("lbphd,dbp->lbph", results[:, :, :-1], directions)
    return attribution[:, :, n + 1:].mean(dim=(1, 2))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_head_logit_attribution", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(head_logit_attribution)

# %% [markdown]
# We load a second copy of the model and fold its LayerNorms (this is irreversible, so `model` stays as it
# is). You should see the induction heads contribute far more to the correct logit on the second copy than any
# other head; the previous-token head contributes little directly: it works through the induction heads.

# %%
folded = micourse.models.load_model("attn_only_2l")
folded.enable_compatibility_mode()
_, f_cache = folded.run_with_cache(rep_tokens)
dla = head_logit_attribution(torch.stack([f_cache["z", layer] for layer in range(cfg.n_layers)]), folded.W_O,
                             folded.W_U, f_cache["ln_final.hook_scale"], rep_tokens, N_REP)
plots.bar(dla.flatten(), labels=[f"L{layer}H{h}" for layer in range(cfg.n_layers) for h in range(cfg.n_heads)],
          title="Direct contribution to the correct logit on the second copy", y_title="logit")

# %% [markdown]
# ### Recap of Part 3
# - Hooks read or rewrite activations during the forward pass: scores without a cache, ablations by editing `z`.
# - Ablating the previous-token head or an induction head raises the second-copy loss by over a nat (by several
#   for the previous-token head); the induction heads write the correct token directly, the previous-token head
#   only through them.

# %% [markdown]
# # Part 4 · The circuit in the weights
#
# **Learning objectives**
# - Show that the induction heads' OV circuits copy: attending to a token raises that token's logit.
# - Show that the previous-token head attends by position alone.
# - Build the K-composition circuit that lets an induction head find "the token after my token".
# - Compare composition scores with a random baseline.
# - Confirm the circuit by ablation: without the previous-token head there is no induction.
#
# From here on we use the folded model's weights (`folded.W_E`, `folded.W_Q`, ...). In TransformerLens's row
# convention, a head's **OV circuit** on tokens is `W_E W_V W_O W_U` (`[source token, output logit]`) and its **QK
# circuit** is `W_E W_Q W_K^T W_E^T` (`[query token, key token]`); both have rank at most `d_head` and are kept as
# `FactoredMatrix` objects where they are large. (Chapter 1 builds these from scratch.)

# %% [markdown]
# ## Exercise: how often does the diagonal win?
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# A `[d_vocab, d_vocab]` table over tokens is too big to read, but one number captures "this maps each token to
# itself": the fraction of rows whose largest entry is on the diagonal. For an OV circuit it says "attending to
# token `t` raises `t` most"; for random matrices it is about `1 / d_vocab`.
#
# Build `diagonal_argmax_fraction(M)`: `M` is `[n, n]`; return the float fraction of rows `i` with
# `argmax_j M[i, j] == i`. It works when the identity matrix gives 1. (Ties at a row's maximum are left
# unspecified: products of float weights do not have them, and no check uses a matrix that has them.)
#
# <details><summary>Hint 1</summary>For each row, where is its largest entry? Compare that with the row's own index.</details>
# <details><summary>Hint 2</summary><code>argmax</code> over the last axis (the columns; <code>dim=0</code> answers another question), compared with <code>torch.arange</code>; the mean of the booleans as floats.</details>

# %% nbgrader={"grade": false, "grade_id": "diagonal_argmax_fraction", "locked": false, "schema_version": 3, "solution": true}
def diagonal_argmax_fraction(M: Float[Tensor, "n n"]) -> float:
    """Fraction of rows of a square matrix whose largest entry is the diagonal one."""
    ### BEGIN SOLUTION
    return (M.argmax(dim=-1) == torch.arange(M.shape[0], device=M.device)).float().mean().item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_diagonal_argmax_fraction", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(diagonal_argmax_fraction)

# %% [markdown]
# ## Exercise: OV copying of every head
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# An induction head must *copy*: having attended to `B`, it should raise the logit of `B` (Elhage et al. 2021,
# "copying" OV circuits; Olsson et al. 2022 make copying one of the two properties that define an induction head).
#
# Build `ov_copy_fractions(W_E, W_V, W_O, W_U)`: `W_E` `[d_vocab, d_model]`, `W_V` `[n_layers, n_heads, d_model,
# d_head]`, `W_O` `[n_layers, n_heads, d_head, d_model]`, `W_U` `[d_model, d_vocab]`; return `[n_layers, n_heads]`:
# for each head, `diagonal_argmax_fraction` of its full OV circuit `W_E W_V W_O W_U` (rows: the token attended
# to; columns: the output logits). It works when a head whose `W_V W_O` is the identity on a model with `W_U =
# W_E^T` scores 1.
#
# <details><summary>Hint 1</summary>A head's full OV circuit is a <code>[d_vocab, d_vocab]</code> product of four matrices; the order in which you multiply decides what it costs.</details>
# <details><summary>Hint 2</summary>Loop over layers and heads; form the thin products on each side first (<code>W_E</code> with <code>W_V</code>, <code>W_O</code> with <code>W_U</code>), multiply those two, and hand the result to your <code>diagonal_argmax_fraction</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "ov_copy_fractions", "locked": false, "schema_version": 3, "solution": true}
def ov_copy_fractions(W_E: Float[Tensor, "d_vocab d_model"], W_V: Float[Tensor, "n_layers n_heads d_model d_head"],
                      W_O: Float[Tensor, "n_layers n_heads d_head d_model"],
                      W_U: Float[Tensor, "d_model d_vocab"]) -> Float[Tensor, "n_layers n_heads"]:
    """Per head: fraction of source tokens whose full-OV-circuit row W_E W_V W_O W_U peaks on the token itself."""
    ### BEGIN SOLUTION
    n_layers, n_heads = W_V.shape[:2]
    out = torch.zeros(n_layers, n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):
            full_ov = (W_E @ W_V[layer, head]) @ (W_O[layer, head] @ W_U)
            out[layer, head] = diagonal_argmax_fraction(full_ov)
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_ov_copy_fractions", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(ov_copy_fractions)

# %% [markdown]
# You should see the induction heads copy for most of the vocabulary (well over half of the rows), and the
# previous-token head hardly at all: what it writes is for the next layer to read, not for the unembedding.

# %%
ov_copy = ov_copy_fractions(folded.W_E, folded.W_V, folded.W_O, folded.W_U)
plots.layer_head_grid(ov_copy, title="Fraction of tokens the full OV circuit maps to themselves", diverging=False,
                      range_color=[0, 1])

# %% [markdown]
# ## Exercise: attention by position alone
# > Difficulty 3/5 · Importance 4/5 · ~15 min
#
# A previous-token head needs no information about tokens: "attend one step back" is a fact about positions.
# Feed a layer nothing but the positional embeddings `W_pos`, each normalised as the folded LayerNorm would
# (centred, then divided by its root-mean-square), and compute every head's causal attention pattern. If the
# previous-token head works by position, its positional pattern is the line below the diagonal.
#
# Build `positional_patterns(W_pos, W_Q, b_Q, W_K, b_K)`: `W_pos` `[n_pos, d_model]`; one layer's `W_Q`, `W_K`
# `[n_heads, d_model, d_head]` and `b_Q`, `b_K` `[n_heads, d_head]`. Normalise the rows `x = W_pos - mean`, `x / sqrt(mean(x²) +
# 1e-5)`; queries `x W_Q[h] + b_Q[h]`, keys likewise; scores `q·k / sqrt(d_head)`, keys after the query masked;
# softmax over keys. Return `[n_heads, n_pos, n_pos]`. It works when every row sums to 1 with nothing above the
# diagonal, and scoring it with `previous_token_score(patterns[None])` finds the previous-token head.
#
# <details><summary>Hint 1</summary>Treat the normalised positional embeddings as the whole residual stream: after that it is an ordinary attention pattern, with its bias terms, the 1/sqrt(d_head) scale and the causal mask.</details>
# <details><summary>Hint 2</summary><code>torch.einsum</code> for every head's queries and keys (add the biases) and for the scores; <code>torch.triu(..., diagonal=1)</code> marks the future keys for <code>masked_fill</code> before <code>softmax</code> over the keys.</details>

# %% nbgrader={"grade": false, "grade_id": "positional_patterns", "locked": false, "schema_version": 3, "solution": true}
def positional_patterns(W_pos: Float[Tensor, "n_pos d_model"], W_Q: Float[Tensor, "n_heads d_model d_head"],
                        b_Q: Float[Tensor, "n_heads d_head"], W_K: Float[Tensor, "n_heads d_model d_head"],
                        b_K: Float[Tensor, "n_heads d_head"]) -> Float[Tensor, "n_heads n_pos n_pos"]:
    """Every head's causal attention pattern when its input is the normalised positional embeddings."""
    ### BEGIN SOLUTION
    x = W_pos - W_pos.mean(dim=-1, keepdim=True)
    x = x / (x.pow(2).mean(dim=-1, keepdim=True) + 1e-5).sqrt()
    q = torch.einsum("pd,hde->hpe", x, W_Q) + b_Q[:, None]
    k = torch.einsum("pd,hde->hpe", x, W_K) + b_K[:, None]
    scores = torch.einsum("hqe,hke->hqk", q, k) / W_Q.shape[-1] ** 0.5
    n_pos = W_pos.shape[0]
    future = torch.triu(torch.ones(n_pos, n_pos, dtype=torch.bool, device=W_pos.device), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_positional_patterns", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(positional_patterns)

# %% [markdown]
# The previous-token scores of the layer-0 heads when they see positions only, next to their scores on
# `BOS + R + R`, and the previous-token head's positional pattern over the first 24 positions. You should see the
# previous-token head keep a high score (above 0.5) with no tokens at all: it attends by position.

# %%
pos_patterns = positional_patterns(folded.W_pos, folded.W_Q[0], folded.b_Q[0], folded.W_K[0], folded.b_K[0])
print("layer 0, previous-token score on positions only:", [round(v, 2) for v in previous_token_score(pos_patterns[None]).tolist()])
print("layer 0, previous-token score on BOS + R + R:   ", [round(v, 2) for v in table[0, 0].tolist()])
plots.attention_pattern(pos_patterns[prev_head, :24, :24], [str(p) for p in range(24)],
                        title=f"L0H{prev_head}: attention from positions alone")

# %% [markdown]
# ## Exercise: the K-composition circuit
# > Difficulty 3/5 · Importance 5/5 · ~15 min
#
# How does the induction head find "the token after an earlier copy of my token"? Its **key** at position `k`
# reads what the previous-token head wrote there: (a transformed copy of) the token at `k - 1`. Its query reads the
# current token. So the score between a query holding token `A` and a key whose *previous* token is `B` is,
# ignoring LayerNorm scales and biases,
# `W_E[A] W_Q (W_E[B] W_V^{prev} W_O^{prev} W_K)^T`: the paper's K-composition term
# `W_E W_QK^{ind} (W_E W_OV^{prev})^T` (Elhage et al. 2021, "Two-Layer Attention-Only Transformers").
# An induction head needs this table to peak on the diagonal: "match keys whose previous token equals my token".
#
# Build `k_composition_circuit(W_E, W_V0, W_O0, W_Q1, W_K1)`: `W_E` `[d_vocab, d_model]`; the previous-token head's
# `W_V0` `[d_model, d_head]`, `W_O0` `[d_head, d_model]`; the induction head's `W_Q1`, `W_K1` `[d_model, d_head]`. Return a
# `FactoredMatrix` `[d_vocab (query token), d_vocab (previous token at the key)]` equal to
# `(W_E W_Q1) (W_E W_V0 W_O0 W_K1)^T`. It works when `.AB` equals the dense product.
#
# <details><summary>Hint 1</summary>Which side of the attention score does the previous-token head change, the query's or the key's? That side gets <code>W_V0 W_O0</code> between the embedding and its own weight.</details>
# <details><summary>Hint 2</summary><code>FactoredMatrix(A, B)</code> stands for <code>A @ B</code> without forming it: here <code>A</code> is the query side <code>[d_vocab, d_head]</code> and <code>B</code> the transposed key side <code>[d_head, d_vocab]</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "k_composition_circuit", "locked": false, "schema_version": 3, "solution": true}
def k_composition_circuit(W_E: Float[Tensor, "d_vocab d_model"], W_V0: Float[Tensor, "d_model d_head"],
                          W_O0: Float[Tensor, "d_head d_model"], W_Q1: Float[Tensor, "d_model d_head"],
                          W_K1: Float[Tensor, "d_model d_head"]) -> FactoredMatrix:
    """(W_E W_Q1)(W_E W_V0 W_O0 W_K1)^T: query token x the token before the key, through the previous-token head."""
    ### BEGIN SOLUTION
    return FactoredMatrix(W_E @ W_Q1, (W_E @ W_V0 @ W_O0 @ W_K1).T)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_k_composition_circuit", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(k_composition_circuit)

# %% [markdown]
# For each induction head, how often the diagonal wins in its K-composition circuit through the previous-token
# head, and, for contrast, through another layer-0 head. You should see the diagonal win in nearly every row
# (above 90 %) through the previous-token head, and in under 10 % of rows through the other.

# %%
other = (prev_head + 1) % cfg.n_heads
for h in ind_heads:
    fractions = {src: diagonal_argmax_fraction(k_composition_circuit(folded.W_E, folded.W_V[0, src], folded.W_O[0, src],
                                                                     folded.W_Q[1, h], folded.W_K[1, h]).AB)
                 for src in (prev_head, other)}
    print(f"L1H{h}: diagonal wins in {fractions[prev_head]:.0%} of rows through L0H{prev_head}, "
          f"{fractions[other]:.0%} through L0H{other}")
kc = k_composition_circuit(folded.W_E, folded.W_V[0, prev_head], folded.W_O[0, prev_head], folded.W_Q[1, ind_head],
                           folded.W_K[1, ind_head]).AB
plots.heatmap(kc[:40, :40], title=f"K-composition circuit L0H{prev_head} -> L1H{ind_head}, first 40 tokens",
              x_title="token before the key", y_title="query token")

# %% [markdown]
# ## Exercise: composition scores of every pair of heads
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# The K-composition circuit is one table per pair of heads. The **composition score** summarises how much of what
# a writer matrix `W_A` puts into the residual stream a reader matrix `W_B` reads:
# `||W_A W_B||_F / (||W_A||_F ||W_B||_F)` (Elhage et al. 2021). For K-composition, `W_A` is a layer-0 head's
# `W_OV = W_V W_O` and `W_B` a layer-1 head's `W_QK^T = W_K W_Q^T` (all `[d_model, d_model]`).
#
# Build `pairwise_composition_scores(W_A, W_B)`: `W_A` `[n_a, d_model, d_model]`, `W_B` `[n_b, d_model, d_model]`;
# return `[n_a, n_b]` with the score of every (writer, reader) pair. It works when identity matrices of size `d`
# give `1 / sqrt(d)`.
#
# <details><summary>Hint 1</summary>Every writer with every reader: one product per pair, then three Frobenius norms. Order matters: the writer comes first (<code>x W_A</code> is then read by <code>W_B</code>).</details>
# <details><summary>Hint 2</summary><code>torch.einsum</code> forms all products at once with the two pair axes in front; <code>torch.linalg.matrix_norm</code> takes the Frobenius norm of the last two axes; broadcast the two norm vectors to <code>[n_a, n_b]</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "pairwise_composition_scores", "locked": false, "schema_version": 3, "solution": true}
def pairwise_composition_scores(W_A: Float[Tensor, "n_a d_model d_model"],
                                W_B: Float[Tensor, "n_b d_model d_model"]) -> Float[Tensor, "n_a n_b"]:
    """||W_A[i] W_B[j]||_F / (||W_A[i]||_F ||W_B[j]||_F) for every pair (i, j)."""
    ### BEGIN SOLUTION
    products = torch.einsum("aij,bjk->abik", W_A, W_B)
    norm_a, norm_b = torch.linalg.matrix_norm(W_A), torch.linalg.matrix_norm(W_B)
    return torch.linalg.matrix_norm(products) / (norm_a[:, None] * norm_b[None, :])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_pairwise_composition_scores", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(pairwise_composition_scores)

# %% [markdown]
# ## Exercise: a random baseline
# > Difficulty 2/5 · Importance 3/5 · ~10 min
#
# Is a score of 0.2 high? Compare it with pairs of random matrices of the same shapes: each of `W_A`, `W_B` the
# product of a standard normal `[d_model, d_head]` and a standard normal `[d_head, d_model]` matrix (rank `d_head`,
# like `W_V W_O` and `W_K W_Q^T`).
#
# Build `random_composition_scores(d_model, d_head, n_samples)`: return `[n_samples]`, the composition score of
# `n_samples` independent random pairs (use `torch.randn`, so `torch.manual_seed` makes it repeatable). It works
# when the scores are stable from one call to the next (their mean agrees to 0.01).
#
# <details><summary>Hint 1</summary>Random directions in many dimensions rarely line up; all-positive matrices always do. Which random numbers give random directions? Each sample needs a pair of its own.</details>
# <details><summary>Hint 2</summary><code>torch.randn</code> (standard normal), batched with a leading <code>n_samples</code> axis, and batched <code>@</code>; only matching pairs, so <code>pairwise_composition_scores</code> (every sample against every other) is not what you want.</details>

# %% nbgrader={"grade": false, "grade_id": "random_composition_scores", "locked": false, "schema_version": 3, "solution": true}
def random_composition_scores(d_model: int, d_head: int, n_samples: int = 1000) -> Float[Tensor, "n_samples"]:
    """Composition scores of n_samples pairs of random rank-d_head matrices (Gaussian factors)."""
    ### BEGIN SOLUTION
    def low_rank():
        return torch.randn(n_samples, d_model, d_head) @ torch.randn(n_samples, d_head, d_model)

    W_A, W_B = low_rank(), low_rank()
    norms = torch.linalg.matrix_norm(W_A) * torch.linalg.matrix_norm(W_B)
    return torch.linalg.matrix_norm(W_A @ W_B) / norms
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_random_composition_scores", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(random_composition_scores)

# %% [markdown]
# K-composition scores of every layer-0 head (rows) with every layer-1 head (columns), minus the random
# baseline's mean. You should see the previous-token head's K-composition with each induction head above the
# 99th percentile of the random scores, well clear of the baseline.

# %%
ov_layer0 = folded.W_V[0] @ folded.W_O[0]                      # W_V W_O of each layer-0 head: [n_heads, d_model, d_model]
qk_t_layer1 = folded.W_K[1] @ folded.W_Q[1].transpose(-1, -2)  # W_K W_Q^T of each layer-1 head: the key side reads
k_comp = pairwise_composition_scores(ov_layer0, qk_t_layer1)
torch.manual_seed(0)
baseline = random_composition_scores(cfg.d_model, cfg.d_head, 2000)
print(f"random baseline: mean {baseline.mean():.3f}, 99th percentile {baseline.quantile(0.99):.3f}")
for h in ind_heads:
    print(f"K-composition L0H{prev_head} -> L1H{h}: {k_comp[prev_head, h]:.3f}")
plots.heatmap(k_comp - baseline.mean(), x_labels=[f"L1H{h}" for h in range(cfg.n_heads)],
              y_labels=[f"L0H{h}" for h in range(cfg.n_heads)], x_title="layer-1 head (reads with its keys)",
              y_title="layer-0 head (writes)", title="K-composition score minus the random baseline")

# %% [markdown]
# ## Exercise: ablating the previous-token head removes induction
# > Difficulty 3/5 · Importance 5/5 · ~15 min
#
# The weights say the induction heads find their target through the previous-token head. The decisive test: zero
# the previous-token head's output and look at the induction heads' attention.
#
# Build `induction_scores_after_ablation(model, tokens, layer, head)`: on `BOS + R + R` tokens, zero-ablate head
# `head` of layer `layer` at `hook_z` and return every head's induction score `[n_layers, n_heads]` from the same
# (ablated) forward pass. It works when ablating a head of the last layer leaves every other head's score unchanged.
#
# <details><summary>Hint 1</summary>The ablation and the measurement must happen in the same forward pass: the layer-1 heads have to see the ablated head's missing output.</details>
# <details><summary>Hint 2</summary>One <code>model.run_with_hooks</code> with two kinds of hooks: your <code>zero_ablate_head_z</code> on <code>blocks.{layer}.attn.hook_z</code>, and the score hooks of <code>induction_scores_with_hooks</code> on every <code>hook_pattern</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "induction_scores_after_ablation", "locked": false, "schema_version": 3, "solution": true}
def induction_scores_after_ablation(model, tokens: Int[Tensor, "batch seq"], layer: int, head: int) -> Float[Tensor, "n_layers n_heads"]:
    """Induction scores of every head on BOS + R + R while head `head` of layer `layer` is zero-ablated at hook_z."""
    ### BEGIN SOLUTION
    n = (tokens.shape[1] - 1) // 2
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)

    def score_hook(pattern, hook):
        scores[hook.layer()] = induction_score(pattern.detach(), n)

    hooks = [(f"blocks.{layer}.attn.hook_z", lambda z, hook: zero_ablate_head_z(z, head)),
             (lambda name: name.endswith("hook_pattern"), score_hook)]
    with torch.no_grad():
        model.run_with_hooks(tokens, return_type=None, fwd_hooks=hooks)
    return scores
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_induction_scores_after_ablation", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(induction_scores_after_ablation)

# %% [markdown]
# You should see every layer-1 induction score fall below 0.1 when the previous-token head is ablated, while
# ablating another layer-0 head leaves every induction head at 0.4 or more. The induction circuit, confirmed three ways: the previous-token
# head attends by position; the induction heads' keys read it (K-composition) and their OV circuits copy; and
# without it, induction is gone.

# %%
clean_ind = table[3, 1]
for src in (prev_head, other):
    after = induction_scores_after_ablation(model, rep_tokens, 0, src)[1]
    print(f"zero-ablate L0H{src}: layer-1 induction scores {[round(v, 2) for v in clean_ind.tolist()]} -> "
          f"{[round(v, 2) for v in after.tolist()]}")

# %% [markdown]
# ### Recap of Part 4
# - The induction heads' OV circuits copy; the previous-token head's positional QK circuit alone looks one step back.
# - Through the previous-token head, an induction head's K-composition circuit peaks on the diagonal, and its
#   K-composition score sits far above a random baseline.
# - Zeroing the previous-token head drops every induction score to about zero.

# %% [markdown]
# # Part 5 · Watching them form
#
# **Learning objectives**
# - Generate training data in which induction pays off, without letting the model cheat by absolute position.
# - Log head scores during training, and find the phase change in the log.
# - See that a 1-layer model, trained the same way, never forms induction heads.
#
# Olsson et al. (2022) found that induction heads appear abruptly, early in training, at the same
# time as a bump in the loss curve and a sharp improvement in in-context learning; models with one layer, which
# cannot build them, show no such change. You will reproduce this on the CPU with a small model and synthetic data:
#
# - a vocabulary of 64 tokens (token 0 is BOS); "text" from a random **bigram chain**, in which every token has
#   three likely successors (`micourse.induction.make_transitions`): a model can learn bigram statistics long
#   before it learns to copy;
# - in every sequence, a span of uniformly random tokens, of random length and starting at a random position,
#   **tiled to the end** of the sequence: from its second copy on, every token is predictable by induction and by
#   nothing else.
#
# The model is like the shipped one, only smaller: 2 attention-only layers with LayerNorm, d_model 64, **two** heads
# of 32 per layer, context 64.
#
# A pitfall (seen when training small models like this one): if every repeat had the same length and position, a
# model could predict the second copy from positions alone ("copy the token a fixed distance back") with no
# previous-token head. Varying both forces the real mechanism.

# %% [markdown]
# ## Exercise: training batches with repeated spans
# > Difficulty 3/5 · Importance 4/5 · ~20 min
#
# Build `make_induction_batch(n_batch, seq_len, transitions, min_len, max_len, seed)`; return `(tokens,
# is_repeat)`, both `[n_batch, seq_len]` (`long` and `bool`). Use one `torch.Generator` seeded with `seed` for every
# random draw. For each sequence:
# 1. position 0 is BOS (token 0); position 1 is drawn from `transitions[0]`, and each next position `p` from
#    `transitions[tokens[p - 1]]` (`transitions` is `[d_vocab, d_vocab]`, rows sum to 1);
# 2. draw a span length `L` uniformly from `min_len ... max_len`, a start `s` uniformly from `1 ... seq_len - 2 L`
#    (so that two full copies fit), and a span `R` of `L` tokens uniform over `1 ... d_vocab - 1`;
# 3. overwrite positions `s, s + 1, ...` to the end with `R` tiled: `tokens[s + i] = R[i % L]`;
# 4. `is_repeat` is True at positions `s + L + 1` to the end: the tokens an induction head could predict (the token
#    at `s + L` repeats `R[0]`, but what precedes it, `R[L - 1]`, has not occurred before).
#
# It works when each row has BOS first, bigram text before its span, a span of allowed length repeating to the end,
# and `is_repeat` marks exactly the predictable part.
#
# <details><summary>Hint 1</summary>The bigram text can be drawn for the whole batch at once, one position at a time (each position depends only on the one before it). The span is different in every row.</details>
# <details><summary>Hint 2</summary><code>torch.multinomial</code> on the rows of <code>transitions</code> picked by the previous tokens (with <code>generator=</code>); per row, <code>torch.randint</code> for the length, the start and the span, and <code>Tensor.repeat</code> then a slice to tile the span to the end.</details>

# %% nbgrader={"grade": false, "grade_id": "make_induction_batch", "locked": false, "schema_version": 3, "solution": true}
def make_induction_batch(n_batch: int, seq_len: int, transitions: Float[Tensor, "d_vocab d_vocab"], min_len: int,
                         max_len: int, seed: int = 0) -> tuple[Int[Tensor, "n_batch seq_len"], Tensor]:
    """(tokens, is_repeat): BOS, bigram-chain text, and a random span tiled from a random start to the end."""
    ### BEGIN SOLUTION
    gen = torch.Generator().manual_seed(seed)
    d_vocab = transitions.shape[0]
    tokens = torch.zeros(n_batch, seq_len, dtype=torch.long)
    for p in range(1, seq_len):
        tokens[:, p] = torch.multinomial(transitions[tokens[:, p - 1]], 1, generator=gen)[:, 0]
    is_repeat = torch.zeros(n_batch, seq_len, dtype=torch.bool)
    for b in range(n_batch):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=gen))
        start = int(torch.randint(1, seq_len - 2 * length + 1, (1,), generator=gen))
        span = torch.randint(1, d_vocab, (length,), generator=gen)
        rest = seq_len - start
        tokens[b, start:] = span.repeat(rest // length + 1)[:rest]
        is_repeat[b, start + length + 1:] = True
    return tokens, is_repeat
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_make_induction_batch", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(make_induction_batch)

# %% [markdown]
# Two sequences of your batch: the bigram text, then the tiled span (marked `*` where `is_repeat` is True).

# %%
RUN = micourse.induction.SMALL_RUN
transitions = micourse.induction.make_transitions(RUN["d_vocab"], RUN["n_successors"], seed=0)
example, example_repeat = make_induction_batch(2, RUN["n_ctx"], transitions, RUN["min_len"], RUN["max_len"], seed=0)
for row, marks in zip(example.tolist(), example_repeat.tolist()):
    print(" ".join(f"{t}{'*' if m else ''}" for t, m in zip(row, marks)))

# %% [markdown]
# ## Exercise: what to log during training
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# During training we probe the model on a fixed batch of `BOS + R + R` every few steps, and keep four numbers.
#
# Build `training_probe(model, probe_tokens)`: return a dict of floats: `"prev_token"`, the highest previous-token
# score among the **first** layer's heads; `"induction"`, the highest induction score among the **last** layer's
# heads; `"first_copy_loss"` and `"second_copy_loss"`, from `loss_on_each_copy`. (For a 1-layer model, first and
# last layer are the same.) It works when it agrees with `head_score_table` and `loss_on_each_copy` on the shipped
# model.
#
# <details><summary>Hint 1</summary>Everything needed is built already: the head-score table and the loss on each copy. "First" and "last" layer are indices into the table's layer axis.</details>
# <details><summary>Hint 2</summary><code>head_score_table</code> (rows in <code>HEAD_KINDS</code> order) and <code>.max()</code> over one layer's heads; <code>loss_on_each_copy</code> of the model's per-token loss; <code>float(...)</code> for each value.</details>

# %% nbgrader={"grade": false, "grade_id": "training_probe", "locked": false, "schema_version": 3, "solution": true}
def training_probe(model, probe_tokens: Int[Tensor, "batch seq"]) -> dict[str, float]:
    """{"prev_token", "induction", "first_copy_loss", "second_copy_loss"} of `model` on BOS + R + R probe tokens."""
    ### BEGIN SOLUTION
    n = (probe_tokens.shape[1] - 1) // 2
    table = head_score_table(model, probe_tokens)
    with torch.no_grad():
        losses = loss_on_each_copy(model(probe_tokens, return_type="loss", loss_per_token=True), n)
    return {"prev_token": float(table[0, 0].max()), "induction": float(table[3, -1].max()),
            "first_copy_loss": float(losses[0]), "second_copy_loss": float(losses[1])}
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_training_probe", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(training_probe)

# %% [markdown]
# ## Training a 2-layer model from scratch
#
# `micourse.induction.train` is a plain AdamW loop (read it: one screen): each step it asks your
# `make_induction_batch` for a fresh batch, and every `log_every` steps it logs the mean training loss, the loss on
# the `is_repeat` tokens and on the others, and your `training_probe` on `BOS + R + R` with `R` of 16 tokens. The
# configuration, `micourse.induction.SMALL_RUN`, is printed below. Its 600 steps take one to a few minutes on one CPU
# thread, depending on what else the machine is doing (`bench/bench_induction_training.py` measures it).

# %%
print(RUN)
SEED = 0
probe_tokens = generate_repeated_tokens(RUN["probe_batch"], RUN["probe_n"], RUN["d_vocab"], 0, seed=1234)


def batches(step: int):
    return make_induction_batch(RUN["batch"], RUN["n_ctx"], transitions, RUN["min_len"], RUN["max_len"],
                                seed=1_000_000 * SEED + step)


model_2l = micourse.induction.make_model(n_layers=2, seed=SEED)
log_2l = micourse.induction.train(model_2l, batches, lambda m: training_probe(m, probe_tokens), desc="2-layer")

# %% [markdown]
# ## Exercise: find the phase change
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# Build `phase_change_step(steps, scores, threshold)`: `steps` and `scores` are equally long lists of numbers (a
# log's steps and, say, its induction scores); return the first step whose score is at least `threshold`, or `-1` if
# none is. It works on a hand-made log.
#
# <details><summary>Hint 1</summary>Return the step, not its index in the list: the log has one row every few steps. A score equal to the threshold counts.</details>
# <details><summary>Hint 2</summary>Walk the two lists together with <code>zip</code> and return at the first hit; after the loop, <code>-1</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "phase_change_step", "locked": false, "schema_version": 3, "solution": true}
def phase_change_step(steps: list, scores: list, threshold: float = 0.4) -> int:
    """First step whose score reaches `threshold`, or -1."""
    ### BEGIN SOLUTION
    for step, score in zip(steps, scores):
        if score >= threshold:
            return int(step)
    return -1
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_phase_change_step", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(phase_change_step)

# %% [markdown]
# The training curves. You should see, in order: the loss falling fast as the model learns the bigram chain;
# a slow stretch (from step 50 to about 60 steps before the phase change) in which both head scores stay below 0.2
# and the loss on repeated tokens falls steadily but by less than a nat in all (the
# model learns that tokens already in the context tend to recur, a trick that needs no induction head); then,
# within well under a hundred steps, the previous-token and induction scores shoot up together (each by more than
# 0.3) while the repeat loss falls to less than half, and the loss on the *other* tokens (bottom panel) bumps up by
# a tenth of a nat or more and comes back down as the model reorganises: the phase change. (`python -m bench.bench_induction_training --seeds 0 1 2` times this run and checks it, and two
# more seeds, for a phase change.)

# %%
steps = [row["step"] for row in log_2l]
change = phase_change_step(steps, [row["induction"] for row in log_2l], 0.4)
change_seconds = next((row["seconds"] for row in log_2l if row["step"] == change), float("nan"))
print(f"induction score first >= 0.4 at step {change} ({change_seconds:.0f} s of training); "
      f"final: induction {log_2l[-1]['induction']:.2f}, previous-token {log_2l[-1]['prev_token']:.2f}, "
      f"repeat loss {log_2l[-1]['repeat_loss']:.2f}")
micourse.induction.plot_training(log_2l, title="2-layer attention-only model: loss and head scores")

# %% [markdown]
# The trained model through your Part 2 detector (its vocabulary is 64 tokens, BOS is 0). You should see a
# previous-token head in layer 0 and an induction head in layer 1, as in the shipped model.

# %%
model_2l.eval()
trained_table = head_score_table(model_2l, generate_repeated_tokens(20, RUN["probe_n"], RUN["d_vocab"], 0, seed=99))
for layer, row in enumerate(label_heads(trained_table, 0.4)):
    print(f"layer {layer}: {row}")

# %% [markdown]
# ## A 1-layer model, trained the same way
#
# A single layer of attention can attend to an earlier copy of the current token, but it cannot know which token
# *followed* it: that needs the previous-token information written by an earlier layer. So a 1-layer model can
# only learn weaker tricks (bigrams; "tokens seen in this context are likely"). Same data, same steps, same probe.

# %%
model_1l = micourse.induction.make_model(n_layers=1, seed=SEED)
log_1l = micourse.induction.train(model_1l, batches, lambda m: training_probe(m, probe_tokens), desc="1-layer")

# %% [markdown]
# You should see the 1-layer model's induction score stay near 0 throughout (below 0.1) and no phase change. Its
# repeat loss does fall, by over a nat (the weaker trick), but it ends more than a nat above the 2-layer model's.

# %%
print(f"final repeat loss: 1 layer {log_1l[-1]['repeat_loss']:.2f}, 2 layers {log_2l[-1]['repeat_loss']:.2f}; "
      f"final induction score: 1 layer {log_1l[-1]['induction']:.2f}, 2 layers {log_2l[-1]['induction']:.2f}")
plots.lines(torch.tensor([[row["repeat_loss"] for row in log[1:]] for log in (log_1l, log_2l)]), x=steps[1:],
            names=["1 layer", "2 layers"], title="Loss on repeated tokens during training", x_title="training step",
            y_title="loss (nats)")

# %% [markdown]
# ### Recap of Part 5
# - With varied repeats, a 2-layer attention-only model learns bigrams first, improves only slowly on repeats while
#   both head scores stay low, then forms a
#   previous-token head and an induction head together in a sudden phase change; the loss on repeated tokens
#   collapses and the loss elsewhere bumps.
# - A 1-layer model trained the same way never forms an induction head and its repeat loss stays high.
#
# ## Summary
# Induction heads complete `A B ... A -> B`. You measured the behaviour (loss on each copy, the in-context learning
# score), found the heads by their attention (a detector that also works on GPT-2 small), took them apart with
# hooks (ablations, logit attribution), read the circuit in the weights (OV copying, a positional previous-token
# head, K-composition), removed it by ablating one head, and watched it form during training.
