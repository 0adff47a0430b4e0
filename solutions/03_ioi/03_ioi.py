# %% [markdown]
# # Chapter 3 · Indirect object identification
#
# This chapter follows Wang et al. (2022), *Interpretability in the Wild: a Circuit for Indirect Object
# Identification in GPT-2 small* (<https://arxiv.org/abs/2211.00593>). The task: finish
#
# > When Mary and John went to the store, John gave a drink to ___
#
# with " Mary". The name that appears once is the **indirect object** (IO, the answer); the name that appears
# twice is the **subject** (S). Its two occurrences are S1 and S2, and END is the last token (" to"). A model
# that gets this right must notice which name is repeated and output the *other* one.
#
# Wang et al. explain how GPT-2 small does it with 26 attention heads in 7 classes (their section 3, "Discovering
# the circuit"): **duplicate-token** heads, and **induction** heads helped by **previous-token** heads, notice at S2
# that S is repeated; **S-inhibition** heads move that fact to END; there they steer the queries of the **name
# movers**, which attend to IO and copy it into the logits; **negative name movers** push the other way, and
# **backup name movers** take over when the name movers are knocked out. You will build these tools (and a few more) and run them yourself:
# logit difference, logit lens, direct logit attribution, attention analysis, activation patching, path
# patching, head classification by scores, the OV copy score, and mean ablation of everything outside a circuit.
#
# **Which model you are looking at.** The notebook loads GPT-2 small when it can reach the model hub, and
# otherwise (in CI, in tests, offline, or with `MICOURSE_OFFLINE=1`) the course's own `ioi_gpt2_2l`: a
# 2-layer, 4-heads-per-layer model with GPT-2's architecture and tokenizer, trained on synthetic IOI sentences.
# The first cell prints which one you got, and every exercise works on both. **Read results accordingly:**
# head indices and numbers quoted from the paper (9.9, 9.6, 10.0 ...) are GPT-2 small's; the offline model
# solves the task with a circuit of its own, which your code will find. Where the two differ, the text has a
# paragraph "If you are on the offline model".
#
# Conventions. `model` is a TransformerLens `TransformerBridge` in compatibility mode: LayerNorm is folded
# into the neighbouring weights and the unembedding is centred, so the final LayerNorm is "centre, then
# divide by a per-position scale" (`ln_final.hook_scale`). Heads are written `(layer, head)` or `L{layer}H{head}`;
# the paper writes `layer.head` (9.9 is layer 9, head 9). Positions index the token tensor, whose position 0
# is the BOS token `<|endoftext|>`.
#
# Every exercise has a visible check (`check(fn)`) that runs here; graders run more checks.

# %%
import torch
from jaxtyping import Float, Int
from torch import Tensor

import micourse.models
import micourse.plots as plots
import micourse.vis as vis
from micourse import ioi
from micourse.checks import check

# %%
torch.set_grad_enabled(False)  # we only read the model in this chapter
model = micourse.models.load_model("gpt2", offline_alternative="ioi_gpt2_2l")
cfg = model.cfg
using_gpt2 = getattr(model, "course_name", "") in ("gpt2", "gpt2-small")
print(f"n_layers={cfg.n_layers}, n_heads={cfg.n_heads}, d_model={cfg.d_model}, d_head={cfg.d_head}, d_vocab={cfg.d_vocab}")
print("You are on", "GPT-2 small: the paper's numbers apply." if using_gpt2 else
      "the offline model ioi_gpt2_2l: its circuit is its own; the paper's head numbers do not apply.")

# %% [markdown]
# GPT-2 small's head classes, as Wang et al. report them (their section 3, with the full lists of heads in
# their appendix K). We use them only when you are on GPT-2 small, to compare with what your code finds.

# %%
WANG_HEADS = {
    "name mover": [(9, 9), (9, 6), (10, 0)],
    "backup name mover": [(10, 10), (10, 6), (10, 2), (10, 1), (11, 2), (9, 7), (9, 0), (11, 9)],
    "negative name mover": [(10, 7), (11, 10)],
    "S-inhibition": [(7, 3), (7, 9), (8, 6), (8, 10)],
    "induction": [(5, 5), (5, 8), (5, 9), (6, 9)],
    "duplicate token": [(0, 1), (0, 10), (3, 0)],
    "previous token": [(2, 2), (4, 11)],
}
WANG_CIRCUIT = sorted({head for heads in WANG_HEADS.values() for head in heads})

# %% [markdown]
# ## The data
#
# `micourse.ioi` generates prompts from Wang et al.'s templates, in both name orders (ABBA: IO first, and
# BABA: S first). **The two orders alternate inside every batch**: prompt 0 is ABBA, prompt 1 BABA, prompt 2 ABBA,
# and so on, so that no position means "IO" across a batch. `make_ioi_data` returns an `IOIData` with the tokens (BOS + prompt, right-padded), the IO and S
# token ids (`answer_ids` is `[batch, 2]` = (correct, incorrect)), and `word_idx`, the positions of IO, S1, S2
# and END in every prompt. With `kind="abc"` and the same seed it gives the same prompts with S2 replaced by a
# third name C ("When Mary and John went to the store, Bob gave a drink to"): nothing is repeated, so nothing
# says which of Mary and John is the answer. We use three batches:
#
# - `tl`: the 8 hand-written prompts of TransformerLens's demos (`ioi.TL_PROMPTS`);
# - `mixed`: prompts from all templates (lengths differ: use `word_idx["end"]`, never position -1);
# - `data` and `abc`: prompts from **one** template, so that every position holds the same word of the template
#   in every prompt (needed to patch "position 10" across a batch, or to average over prompts position by
#   position). The one exception is the first two names: because ABBA and BABA alternate, the first name is IO in
#   half of the prompts and S1 in the other half. S2 and END are at the same positions in all of them.

# %%
# Patching sweeps run one forward pass per cell of their grid (GPT-2 small: 144 heads, 12 layers x ~15 positions),
# so batches stay small on a CPU: 8 prompts on the offline model, 4 on GPT-2 small (enough for the effects below,
# which are large; use more where you have a GPU or time).
n_prompts = 4 if using_gpt2 else 8
tl = ioi.tl_prompt_data()
mixed = ioi.make_ioi_data(32, seed=1)
data = ioi.make_ioi_data(n_prompts, seed=0, templates=[0])
abc = ioi.make_ioi_data(n_prompts, seed=0, templates=[0], kind="abc")
for d, name in [(tl, "tl"), (mixed, "mixed"), (data, "data"), (abc, "abc")]:
    print(f"{name:6s} {tuple(d.tokens.shape)}  {d.prompts[0]!r}")
print("positions in data[0]:", {k: int(v[0]) for k, v in data.word_idx.items()})

# %% [markdown]
# # Part 1 · The behaviour and its metric
#
# **Learning objectives**
# - Measure IOI performance with the logit difference between IO and S at END.
# - Build corrupted prompts that flip the answer, and know what the ABC distribution is for.
#
# ## Exercise: the logit difference
# > Difficulty 1/5 · Importance 5/5 · ~10 min
#
# Accuracy throws information away; the log-probability of IO depends on every other token. Wang et al.
# measure IOI with the **logit difference** `logit(IO) - logit(S)` at END (their section 2): it is what the
# circuit must produce, it is linear in the residual stream (so it can be split into contributions), and its
# exponential is the ratio of the two names' probabilities: the softmax's normaliser cancels, so
# `exp(logit(IO) - logit(S)) = p(IO) / p(S)`.
#
# Build `logit_diff(logits, answer_ids, end_pos)`: `logits` is `[batch, pos, d_vocab]`, `answer_ids` `[batch, 2]`
# holds (correct, incorrect) token ids, `end_pos` `[batch]` the position of END in each prompt. Return `[batch]`:
# `logits[b, end_pos[b], correct] - logits[b, end_pos[b], incorrect]`. It works when it is positive on
# prompts the model gets right.
#
# <details><summary>Hint 1</summary>Every prompt has its own END, and prompts are right-padded: position -1 is END only for the longest ones. Pick one row of logits per prompt first, then two entries of that row.</details>
# <details><summary>Hint 2</summary>Advanced indexing with <code>torch.arange(batch)</code> and <code>end_pos</code> picks one row per prompt; <code>Tensor.gather</code> along the vocabulary axis picks the two answer logits.</details>

# %% nbgrader={"grade": false, "grade_id": "logit_diff", "locked": false, "schema_version": 3, "solution": true}
def logit_diff(logits: Float[Tensor, "batch pos d_vocab"], answer_ids: Int[Tensor, "batch 2"],
               end_pos: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]:
    """logit(correct) - logit(incorrect) at each prompt's END position."""
    ### BEGIN SOLUTION
    end_logits = logits[torch.arange(logits.shape[0]), end_pos]
    answer_logits = end_logits.gather(1, answer_ids)
    return answer_logits[:, 0] - answer_logits[:, 1]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_logit_diff", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(logit_diff)

# %% [markdown]
# The logit difference on TransformerLens's 8 prompts. On GPT-2 small, TransformerLens's exploratory-analysis
# demo reports a mean of 3.55 on exactly these prompts (IO about e^3.55 ≈ 35 times as probable as S), and the
# course's tests check that the reference solution reproduces it wherever GPT-2 small is available. If you are on
# the offline model, you should see every prompt positive and a mean above GPT-2 small's: it was trained on this
# task and nothing else.

# %%
tl_logits = model(tl.tokens)
tl_ld = logit_diff(tl_logits, tl.answer_ids, tl.word_idx["end"])
for prompt, (io, s), x in zip(tl.prompts, tl.names, tl_ld.tolist()):
    print(f"{x:6.2f}  {prompt} -> {io} (not {s})")
print(f"mean logit difference: {tl_ld.mean():.2f}")

# %% [markdown]
# ## Exercise: corrupted prompts
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# Causal experiments compare a **clean** run with a **corrupted** one that differs in one controlled way. For
# IOI the classic corruption replaces the name at S2: "When Mary and John went to the store, **Mary** gave a
# drink to" now wants " John". Everything else (template, positions, the two names) is unchanged, so whatever
# changes inside the model is about *which name is repeated*. Replacing S2 by a third name instead gives the
# ABC prompts, where no answer is right.
#
# Build `corrupt_s2(tokens, s2_pos, new_ids)`: return a copy of `tokens` `[batch, pos]` in which the token at
# `s2_pos[b]` of row `b` is `new_ids[b]`; nothing else changes, and the input is not modified. It works when
# `corrupt_s2(tokens, s2_pos, io_ids)` gives the flipped prompts.
#
# <details><summary>Hint 1</summary>Only one token per row changes: S2, not S1. And the caller's tensor must come back untouched.</details>
# <details><summary>Hint 2</summary><code>Tensor.clone</code>, then assignment with a pair of index tensors (one for the rows, <code>s2_pos</code> for the columns).</details>

# %% nbgrader={"grade": false, "grade_id": "corrupt_s2", "locked": false, "schema_version": 3, "solution": true}
def corrupt_s2(tokens: Int[Tensor, "batch pos"], s2_pos: Int[Tensor, "batch"],
               new_ids: Int[Tensor, "batch"]) -> Int[Tensor, "batch pos"]:
    """A copy of `tokens` with the token at S2 of each row replaced by new_ids[row]."""
    ### BEGIN SOLUTION
    out = tokens.clone()
    out[torch.arange(tokens.shape[0]), s2_pos] = new_ids
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_corrupt_s2", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(corrupt_s2)

# %% [markdown]
# The logit difference (always with the *clean* answers) on clean, flipped and ABC prompts. On flipped prompts
# the model should now prefer S, so the mean should be clearly negative; on ABC prompts neither name is
# preferred and the mean should be close to 0. These two numbers are the ends of the scale for the patching
# experiments of Parts 4 and 5.

# %%
flipped = corrupt_s2(data.tokens, data.word_idx["S2"], data.io_ids)
print(model.to_string(flipped[0]))
clean_ld = logit_diff(model(data.tokens), data.answer_ids, data.word_idx["end"]).mean()
flipped_ld = logit_diff(model(flipped), data.answer_ids, data.word_idx["end"]).mean()
abc_ld = logit_diff(model(abc.tokens), data.answer_ids, data.word_idx["end"]).mean()
print(f"clean {clean_ld:.2f}, flipped {flipped_ld:.2f}, ABC {abc_ld:.2f}")

# %% [markdown]
# ### Recap of Part 1
# - The logit difference at END measures IOI; its mean over a batch is our metric throughout.
# - Flipping the name at S2 flips the model's preference; replacing it with a third name removes it. The
#   model reads *which name is repeated*, which is what the rest of the chapter traces.

# %% [markdown]
# # Part 2 · Where does the answer appear? Logit lens and direct logit attribution
#
# **Learning objectives**
# - Turn any residual-stream vector at END into its contribution to the logit difference.
# - Read the logit lens over layers: when does the residual stream "know" the answer?
# - Split the final logit difference into layers, then into heads (direct logit attribution).
# - Tell apart "raises IO" from "lowers S" for a head.
#
# The logits at END are `LN_final(x_END) @ W_U + b_U`. In compatibility mode `LN_final(x) = (x - mean(x)) / scale`
# with `scale` read from the cache, so if we **freeze** the scale, the logit difference is linear in `x_END`:
#
# $$\text{LD} = \frac{x_{END} - \overline{x_{END}}}{\text{scale}} \cdot \big(W_U[:, IO] - W_U[:, S]\big)
# + \big(b_U[IO] - b_U[S]\big).$$
#
# The last term is a small constant (folding LayerNorm moved the final LayerNorm's bias into `b_U`); we leave it
# out of every attribution.
#
# `x_END` is a sum of what the embeddings, every head and every MLP wrote, so the logit difference is a sum
# of their contributions: **direct logit attribution** (Elhage et al. 2021; Wang et al. 2022 project head outputs on
# `W_U[IO]` and `W_U[S]` in the same way, section 3.1). It measures only *direct* effects: a head that matters through
# later layers can score zero here.

# %% [markdown]
# ## Exercise: the logit-difference direction
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# Build `logit_diff_directions(W_U, answer_ids)`: `W_U` is `[d_model, d_vocab]`; return `[batch, d_model]`,
# row `b` being `W_U[:, correct_b] - W_U[:, incorrect_b]`. A residual vector's dot product with its row is its
# contribution to that prompt's logit difference. It works when `final_ln_output @ directions.T` (diagonal)
# reproduces `logit_diff`.
#
# <details><summary>Hint 1</summary>Indexing the vocabulary axis of <code>W_U</code> with a vector of token ids gives one column per prompt; the result must have the prompts first.</details>
# <details><summary>Hint 2</summary>Index <code>W_U</code> with each column of <code>answer_ids</code>, subtract, and transpose (<code>.T</code>).</details>

# %% nbgrader={"grade": false, "grade_id": "logit_diff_directions", "locked": false, "schema_version": 3, "solution": true}
def logit_diff_directions(W_U: Float[Tensor, "d_model d_vocab"],
                          answer_ids: Int[Tensor, "batch 2"]) -> Float[Tensor, "batch d_model"]:
    """Row b: W_U[:, correct_b] - W_U[:, incorrect_b]."""
    ### BEGIN SOLUTION
    return (W_U[:, answer_ids[:, 0]] - W_U[:, answer_ids[:, 1]]).T
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_logit_diff_directions", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(logit_diff_directions)

# %% [markdown]
# ## Exercise: the final LayerNorm on a stack of components
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# To attribute, we apply the final LayerNorm to each component *separately*, with the scale of the whole
# residual stream: centre each component over `d_model`, then divide by the cached scale of its prompt (the
# same for every component). TransformerLens calls this `cache.apply_ln_to_stack`; here you write it.
#
# Build `apply_final_ln(stack, scale)`: `stack` is `[..., batch, d_model]` (any number of leading component
# axes), `scale` is `[batch, 1]` (the cached `ln_final.hook_scale` at END). Return the same shape. It works when
# applying it to the whole residual stream gives `cache["ln_final.hook_normalized"]` at END.
#
# <details><summary>Hint 1</summary>Two steps, in this order: remove each vector's mean over <code>d_model</code>, then divide by its prompt's scale.</details>
# <details><summary>Hint 2</summary><code>Tensor.mean</code> with <code>dim=-1, keepdim=True</code>; <code>scale</code> is <code>[batch, 1]</code> and broadcasts against <code>[..., batch, d_model]</code> as it is.</details>

# %% nbgrader={"grade": false, "grade_id": "apply_final_ln", "locked": false, "schema_version": 3, "solution": true}
def apply_final_ln(stack: Float[Tensor, "... batch d_model"],
                   scale: Float[Tensor, "batch 1"]) -> Float[Tensor, "... batch d_model"]:
    """Centre each vector over d_model, then divide by its prompt's final-LayerNorm scale."""
    ### BEGIN SOLUTION
    centred = stack - stack.mean(dim=-1, keepdim=True)
    return centred / scale
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_apply_final_ln", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(apply_final_ln)

# %% [markdown]
# ## Exercise: the logit lens
# > Difficulty 3/5 · Importance 4/5 · ~15 min
#
# The **logit lens** (nostalgebraist 2020) reads the residual stream at every depth as if the model stopped
# there. Here we read one number: the logit difference the residual stream at END would give so far. Where it
# jumps, something wrote the answer.
#
# Build `logit_lens_logit_diff(model, tokens, answer_ids, end_pos)`. Run the model with a cache; take the
# **accumulated** residual stream at END before every layer's attention and before every layer's MLP, and the
# final one (`cache.accumulated_resid(layer=-1, incl_mid=True)` gives them in this order: `0_pre, 0_mid, 1_pre,
# ..., final_post`, shape `[2 n_layers + 1, batch, pos, d_model]`). Apply the final LayerNorm with the **final**
# scale at END, project on each prompt's logit-difference direction, and average over the batch. Return
# `[2 n_layers + 1]`. It works when the last entry plus the mean of `b_U[IO] - b_U[S]` equals the mean `logit_diff`.
#
# <details><summary>Hint 1</summary>Select END per prompt after stacking (the component axis comes first), and take the final LayerNorm scale at the same positions. Then it is the previous two exercises, applied to every component at once.</details>
# <details><summary>Hint 2</summary>Index the stack with <code>torch.arange(batch)</code> and <code>end_pos</code> on its batch and position axes; <code>apply_final_ln</code>, then a dot product with <code>logit_diff_directions</code> over <code>d_model</code>, then the mean over the batch.</details>

# %% nbgrader={"grade": false, "grade_id": "logit_lens_logit_diff", "locked": false, "schema_version": 3, "solution": true}
def logit_lens_logit_diff(model, tokens: Int[Tensor, "batch pos"], answer_ids: Int[Tensor, "batch 2"],
                          end_pos: Int[Tensor, "batch"]) -> Float[Tensor, "n_resid"]:
    """Mean logit difference read from the accumulated residual stream at END: [0_pre, 0_mid, ..., final_post]."""
    ### BEGIN SOLUTION
    _, cache = model.run_with_cache(tokens)
    rows = torch.arange(tokens.shape[0])
    acc = cache.accumulated_resid(layer=-1, incl_mid=True)[:, rows, end_pos]
    scale = cache["ln_final.hook_scale"][rows, end_pos]
    directions = logit_diff_directions(model.W_U, answer_ids)
    return (apply_final_ln(acc, scale) * directions).sum(-1).mean(-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_logit_lens_logit_diff", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(logit_lens_logit_diff)

# %% [markdown]
# Your logit lens on the mixed batch. On GPT-2 small, Wang et al. find the answer written late: the heads
# that write it directly sit in layers 9-11 (section 3.1), so expect the curve to stay low through the early
# layers and rise in the last ones (the course's online tests check that on GPT-2 small the reference solution's
# curve before layer 6 is below half of its final value). If you are on the offline model, you should see the curve
# flat near 0 (within 5 % of the final value) until the attention of its last layer (`1_mid`, the first point
# clearly above 0, at more than a tenth of the final value) and the MLP after it add the rest.

# %%
resid_labels = [f"{layer}_{where}" for layer in range(cfg.n_layers) for where in ("pre", "mid")] + ["final_post"]
lens = logit_lens_logit_diff(model, mixed.tokens, mixed.answer_ids, mixed.word_idx["end"])
plots.lines(lens, x=resid_labels, title="Logit lens: logit difference from the residual stream at END",
            x_title="residual stream (before layer L's attention / MLP)", y_title="mean logit difference")

# %% [markdown]
# ## Exercise: direct logit attribution by layer
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# The logit lens shows *when*; the **decomposed** residual stream shows *who*: the embeddings, and each
# layer's attention output and MLP output, separately (`cache.decompose_resid(layer=-1)` gives
# `embed, pos_embed, 0_attn_out, 0_mlp_out, 1_attn_out, ...`, shape `[2 + 2 n_layers, batch, pos, d_model]`).
#
# Build `dla_by_component(model, tokens, answer_ids, end_pos)`: return `[2 + 2 n_layers]`, each component's
# mean contribution to the logit difference at END (final LayerNorm with the final scale, as before). It works
# when the components plus the unembedding bias's share add up to the model's mean logit difference.
#
# <details><summary>Hint 1</summary>The same recipe as the logit lens: only the stack of residual vectors changes.</details>
# <details><summary>Hint 2</summary><code>cache.decompose_resid(layer=-1)</code> instead of <code>accumulated_resid</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "dla_by_component", "locked": false, "schema_version": 3, "solution": true}
def dla_by_component(model, tokens: Int[Tensor, "batch pos"], answer_ids: Int[Tensor, "batch 2"],
                     end_pos: Int[Tensor, "batch"]) -> Float[Tensor, "n_components"]:
    """Mean direct contribution to the logit difference of embed, pos_embed, then each layer's attn_out, mlp_out."""
    ### BEGIN SOLUTION
    _, cache = model.run_with_cache(tokens)
    rows = torch.arange(tokens.shape[0])
    components = cache.decompose_resid(layer=-1)[:, rows, end_pos]
    scale = cache["ln_final.hook_scale"][rows, end_pos]
    directions = logit_diff_directions(model.W_U, answer_ids)
    return (apply_final_ln(components, scale) * directions).sum(-1).mean(-1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_dla_by_component", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(dla_by_component)

# %% [markdown]
# On GPT-2 small the heads with large direct effects sit in the last layers (Wang et al., section 3.1), so expect
# the largest contribution from the attention of layer 9 or 10, where the name movers are (an online test checks
# this with the reference solution).
# If you are on the offline model, you should see nearly everything in the last layer: its attention and its
# MLP, with the MLP the larger of the two; the embeddings and layer 0 write almost nothing directly.

# %%
component_labels = ["embed", "pos_embed"] + [f"{layer}_{kind}" for layer in range(cfg.n_layers) for kind in ("attn", "mlp")]
by_component = dla_by_component(model, mixed.tokens, mixed.answer_ids, mixed.word_idx["end"])
bias_share = (model.b_U[mixed.io_ids] - model.b_U[mixed.s_ids]).mean()
print(f"sum of components {by_component.sum():.3f} + unembedding bias {bias_share:.3f} = mean logit difference "
      f"{logit_diff(model(mixed.tokens), mixed.answer_ids, mixed.word_idx['end']).mean():.3f}")
plots.bar(by_component, component_labels, title="Direct logit attribution by component",
          x_title="component", y_title="contribution to the logit difference")

# %% [markdown]
# ## Exercise: direct logit attribution by head
# > Difficulty 3/5 · Importance 5/5 · ~15 min
#
# An attention layer's output is the sum of its heads' results `z_h @ W_O[h]` plus the bias `b_O`
# (chapter 1). Wang et al. found their name movers as the few heads whose direct effect on the logits is large
# (section 3.1; they measured it with path patching, Part 5; attribution is the linear shortcut).
#
# Build `dla_by_head(model, tokens, answer_ids, end_pos)`: return `[n_layers, n_heads]`, each head's mean
# direct contribution to the logit difference at END (the bias `b_O` belongs to no head and is left out).
# It works when each layer's row plus its `b_O` contribution gives that layer's `attn` entry of
# `dla_by_component`.
#
# <details><summary>Hint 1</summary>The same recipe again, on a stack of per-head outputs at END; mind the order of the flattened heads when you reshape to <code>[n_layers, n_heads]</code>.</details>
# <details><summary>Hint 2</summary><code>cache.stack_head_results(layer=-1)</code> (heads in layer-major order), or the per-head results from <code>cache["z", layer]</code> and <code>model.W_O[layer]</code> with <code>einsum</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "dla_by_head", "locked": false, "schema_version": 3, "solution": true}
def dla_by_head(model, tokens: Int[Tensor, "batch pos"], answer_ids: Int[Tensor, "batch 2"],
                end_pos: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]:
    """Each head's mean direct contribution to the logit difference at END."""
    ### BEGIN SOLUTION
    _, cache = model.run_with_cache(tokens)
    rows = torch.arange(tokens.shape[0])
    results = cache.stack_head_results(layer=-1)[:, rows, end_pos]
    scale = cache["ln_final.hook_scale"][rows, end_pos]
    directions = logit_diff_directions(model.W_U, answer_ids)
    per_head = (apply_final_ln(results, scale) * directions).sum(-1).mean(-1)
    return per_head.reshape(model.cfg.n_layers, model.cfg.n_heads)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_dla_by_head", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(dla_by_head)

# %% [markdown]
# Red heads (positive) push towards IO, blue heads (negative) towards S, white is 0: the course's colour
# convention for every diverging plot. On GPT-2 small, Wang et al. find 9.9, 9.6 and 10.0 pushing most towards IO
# (the name movers) and 10.7 and 11.10 pushing against it (the negative name movers; section 3.1); on the mixed
# batch the head with the largest positive attribution is 9.6 or 9.9, and 10.7 or 11.10 is among the two most
# negative (the course's online tests check this with the reference solution). If you are on the offline model,
# you should see **one** layer-1 head carrying almost all of the attention's attribution and every other head
# near 0.

# %%
head_dla = dla_by_head(model, mixed.tokens, mixed.answer_ids, mixed.word_idx["end"])
all_heads = [(layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
top_head = divmod(int(head_dla.argmax()), cfg.n_heads)
bottom_head = divmod(int(head_dla.argmin()), cfg.n_heads)
print(f"largest positive attribution: L{top_head[0]}H{top_head[1]} ({head_dla.max():.2f}); "
      f"most negative: L{bottom_head[0]}H{bottom_head[1]} ({head_dla.min():.2f})")
plots.layer_head_grid(head_dla, title="Direct logit attribution by head (logit difference IO - S)")

# %% [markdown]
# ## Exercise: does a head raise IO, or lower S?
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# A positive contribution to `logit(IO) - logit(S)` can come from raising IO or from lowering S. GPT-2's name
# movers do the first: they attend to IO and copy it (Wang et al., section 3.1). A head that attends to S and
# writes *minus* S would score just as well in the previous exercise and be a different mechanism. Attribute to
# each name's logit separately to tell them apart. (The unembedding is centred, so a single logit is measured
# relative to the average logit.)
#
# Build `dla_on_names(model, tokens, name_ids, end_pos)`: `name_ids` is `[batch, k]` (e.g. `answer_ids`, whose
# columns are IO and S); return `[n_layers, n_heads, k]`, each head's mean direct contribution to the logit of
# each of the `k` names at END. It works when column 0 minus column 1 with `name_ids = answer_ids` gives
# `dla_by_head`.
#
# <details><summary>Hint 1</summary>Project on each name's own unembedding column instead of on the difference of two columns; every prompt has its own names.</details>
# <details><summary>Hint 2</summary><code>model.W_U[:, name_ids]</code> is <code>[d_model, batch, k]</code>; contract it with the normalised head results over <code>d_model</code>, keeping the batch axis paired (<code>torch.einsum</code>), then average over the batch.</details>

# %% nbgrader={"grade": false, "grade_id": "dla_on_names", "locked": false, "schema_version": 3, "solution": true}
def dla_on_names(model, tokens: Int[Tensor, "batch pos"], name_ids: Int[Tensor, "batch k"],
                 end_pos: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads k"]:
    """Each head's mean direct contribution at END to the logit of each name in name_ids (one column each)."""
    ### BEGIN SOLUTION
    _, cache = model.run_with_cache(tokens)
    rows = torch.arange(tokens.shape[0])
    results = cache.stack_head_results(layer=-1)[:, rows, end_pos]
    scale = cache["ln_final.hook_scale"][rows, end_pos]
    per_name = torch.einsum("cbd,dbk->cbk", apply_final_ln(results, scale), model.W_U[:, name_ids])
    return per_name.mean(1).reshape(model.cfg.n_layers, model.cfg.n_heads, name_ids.shape[1])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_dla_on_names", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(dla_on_names)

# %% [markdown]
# What the head with the largest attribution writes on each name. A name mover shows a large positive IO
# entry. If you are on the offline model, you should see its top head lower the S logit far more than it
# changes the IO logit: it works by **suppressing S**, not by copying IO.

# %%
names_dla = dla_on_names(model, mixed.tokens, mixed.answer_ids, mixed.word_idx["end"])
print(f"L{top_head[0]}H{top_head[1]}: on the IO logit {names_dla[top_head][0]:+.2f}, on the S logit {names_dla[top_head][1]:+.2f}")
fig = plots.layer_head_grid(names_dla[..., 0], title="Direct contribution to the IO logit")
fig.show()
plots.layer_head_grid(names_dla[..., 1], title="Direct contribution to the S logit")

# %% [markdown]
# ### Recap of Part 2
# - With the final LayerNorm scale frozen, the logit difference is a sum over components; the logit lens
#   and direct logit attribution read it layer by layer and head by head.
# - On GPT-2 small (Wang et al.): the answer is written late, by name movers (9.9, 9.6, 10.0) and opposed by
#   negative name movers (10.7, 11.10).
# - If you are on the offline model: the last layer writes it, through one attention head and the final MLP;
#   that head lowers S rather than raising IO.
# - Direct attribution sees only direct effects. Which heads *cause* these heads to behave as they do is the
#   subject of Parts 4 and 5.

# %% [markdown]
# # Part 3 · What do the top heads attend to?
#
# **Learning objectives**
# - Measure attention from END to the IO, S1 and S2 positions, per head, across a batch.
# - Look at the attention of the heads with the largest attribution.
#
# ## Exercise: attention from END to a word
# > Difficulty 2/5 · Importance 4/5 · ~10 min
#
# A name mover attends from END to IO (Wang et al., section 3.1); an S-inhibition head attends from END to S2
# (section 3.2). Positions differ between prompts, so we need, for every prompt, the attention from *its* END
# to *its* IO (or S1, S2).
#
# Build `attention_from_end(pattern, end_pos, key_pos)`: `pattern` is one layer's `[batch, n_heads, q_pos, k_pos]`,
# `end_pos` and `key_pos` are `[batch]`; return `[n_heads]`, the mean over the batch of
# `pattern[b, h, end_pos[b], key_pos[b]]`. It works on a pattern you build by hand.
#
# <details><summary>Hint 1</summary>For prompt <code>b</code> you need a single entry of each head's pattern: row <code>end_pos[b]</code>, column <code>key_pos[b]</code>. Not every pair of END and key positions across prompts.</details>
# <details><summary>Hint 2</summary>Advanced indexing with three index tensors (rows, <code>end_pos</code>, <code>key_pos</code>) on axes 0, 2 and 3 and a slice on the head axis, then the mean over the batch.</details>

# %% nbgrader={"grade": false, "grade_id": "attention_from_end", "locked": false, "schema_version": 3, "solution": true}
def attention_from_end(pattern: Float[Tensor, "batch n_heads q_pos k_pos"], end_pos: Int[Tensor, "batch"],
                       key_pos: Int[Tensor, "batch"]) -> Float[Tensor, "n_heads"]:
    """Mean over prompts of the attention each head pays from END to key_pos."""
    ### BEGIN SOLUTION
    rows = torch.arange(pattern.shape[0])
    return pattern[rows, :, end_pos, key_pos].mean(0)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_attention_from_end", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(attention_from_end)

# %% [markdown]
# Attention from END to IO, S1 and S2 for every head on the mixed batch. On GPT-2 small, Wang et al. report the
# name movers attending to IO (0.59 on average, section 3.1) and the S-inhibition heads to S2 (0.51 on average,
# section 3.2); the online tests check that the reference solution finds both on this batch. If you are on the offline model, you should see the top
# head from Part 2 attend to S2, and the heads that attend to the names attend to IO and S1 about equally: no
# head singles out IO. The top head attends to S2 just as much on ABC prompts, where the name there is not a
# repeat: it finds S2 by its position in the sentence, not by spotting a repeated name.

# %%
_, mixed_cache = model.run_with_cache(mixed.tokens, names_filter=lambda name: name.endswith("hook_pattern"))
attn = {word: torch.stack([attention_from_end(mixed_cache["pattern", layer], mixed.word_idx["end"], mixed.word_idx[word])
                           for layer in range(cfg.n_layers)]) for word in ("IO", "S1", "S2")}
for word in ("IO", "S1", "S2"):
    plots.layer_head_grid(attn[word], title=f"Attention from END to {word}", diverging=False, range_color=[0, 1]).show()
print(f"L{top_head[0]}H{top_head[1]} attends from END to IO {attn['IO'][top_head]:.2f}, S1 {attn['S1'][top_head]:.2f}, "
      f"S2 {attn['S2'][top_head]:.2f}")
_, abc_cache = model.run_with_cache(abc.tokens, names_filter=lambda name: name.endswith("hook_pattern"))
abc_to_s2 = attention_from_end(abc_cache["pattern", top_head[0]], abc.word_idx["end"], abc.word_idx["S2"])[top_head[1]]
print(f"on ABC prompts (a third name at S2) it attends to S2 {abc_to_s2:.2f}")

# %% [markdown]
# The attention of the four heads with the largest |attribution| on the first of TransformerLens's prompts
# (hover a head, then a token: the END row is the one that matters).

# %%
top4 = [all_heads[i] for i in head_dla.abs().flatten().argsort(descending=True)[:4].tolist()]
_, tl_cache = model.run_with_cache(tl.tokens[:1], names_filter=lambda name: name.endswith("hook_pattern"))
vis.attention_heads(torch.stack([tl_cache["pattern", layer][0, h] for layer, h in top4]),
                    model.to_str_tokens(tl.tokens[0]), head_names=[f"L{layer}H{h}" for layer, h in top4])

# %% [markdown]
# ### Recap of Part 3
# - Attention from END tells which name a head reads; with its attribution it says what the head does with it.
# - GPT-2 small (Wang et al.): name movers read IO and copy it; S-inhibition heads read S2.
# - If you are on the offline model: the top head reads S2 and writes minus that name; other heads read both
#   names alike.

# %% [markdown]
# # Part 4 · Activation patching
#
# **Learning objectives**
# - Normalise a patching result so that 0 means "corrupted" and 1 means "clean".
# - Patch the residual stream by layer and position, then head outputs, and find where the information is.
# - Separate *where a head looks* (its pattern) from *what it moves* (its values).
#
# Activation patching (Meng et al. 2022; Wang et al. 2022 use it in their appendix A) runs the model on corrupted
# prompts and restores **one** activation from the clean run. If the logit difference comes back, that activation
# carries the information that differs between the two prompts. Running the corrupted input and restoring clean
# activations is called **denoising**; every patching exercise of this part denoises. (Part 5 does the opposite.) We corrupt by flipping S2 (Part 1), so what is
# restored is "which name is repeated". Every patching function here takes the model, the clean and corrupted
# tokens and the answers, builds its hooks inside, and returns a tensor.

# %% [markdown]
# ## Exercise: the normalised patching metric
# > Difficulty 1/5 · Importance 4/5 · ~5 min
#
# Raw logit differences depend on the prompts. Normalise: `(LD - corrupted LD) / (clean LD - corrupted LD)`,
# which is 0 when patching restored nothing and 1 when it restored all.
#
# Build `patching_metric(ld, clean_ld, corrupted_ld)`: tensors that broadcast (e.g. a grid of patched mean logit
# differences and two scalars); return the normalised metric, same shape as `ld`. It works when the clean and
# corrupted values map to 1 and 0.
#
# <details><summary>Hint</summary>One line; keep it a tensor operation so that it works on a whole grid.</details>

# %% nbgrader={"grade": false, "grade_id": "patching_metric", "locked": false, "schema_version": 3, "solution": true}
def patching_metric(ld: Float[Tensor, "..."], clean_ld: Float[Tensor, ""],
                    corrupted_ld: Float[Tensor, ""]) -> Float[Tensor, "..."]:
    """(ld - corrupted_ld) / (clean_ld - corrupted_ld): 0 = as corrupted, 1 = as clean."""
    ### BEGIN SOLUTION
    return (ld - corrupted_ld) / (clean_ld - corrupted_ld)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_patching_metric", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(patching_metric)

# %% [markdown]
# ## Exercise: patch the residual stream by layer and position
# > Difficulty 3/5 · Importance 5/5 · ~20 min
#
# The coarsest question: at which position, and before which layer, does the residual stream hold what the
# model needs? Patch `blocks.{layer}.hook_resid_pre` at one position at a time.
#
# Build `patch_residual(model, clean_tokens, corrupted_tokens, answer_ids, end_pos)`: both token tensors are
# `[batch, pos]` with the same positions (one template). Compute the mean clean and corrupted logit differences
# (with the clean answers). Then for every layer and position, run the **corrupted** tokens with the clean
# `resid_pre` of that layer written in at that position (all prompts at once), and record the normalised
# metric of the mean logit difference. Return `[n_layers, pos]`. It works when it matches TransformerLens's
# `patching.get_act_patch_resid_pre` with the same metric.
#
# <details><summary>Hint 1</summary>One clean forward pass with a cache is enough for the whole sweep; then one corrupted forward pass per (layer, position), each with one hook.</details>
# <details><summary>Hint 2</summary><code>model.run_with_cache</code> (with a <code>names_filter</code> for <code>hook_resid_pre</code>), then <code>model.run_with_hooks</code> with a hook on <code>blocks.{layer}.hook_resid_pre</code> that overwrites one position with the cached clean value and returns the tensor. Bind <code>layer</code> and <code>pos</code> as default arguments (or with <code>functools.partial</code>): a hook that runs after the loop has moved on would otherwise see the loop's latest values.</details>

# %% nbgrader={"grade": false, "grade_id": "patch_residual", "locked": false, "schema_version": 3, "solution": true}
def patch_residual(model, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
                   answer_ids: Int[Tensor, "batch 2"], end_pos: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers pos"]:
    """Normalised metric after restoring the clean resid_pre of one (layer, position) in the corrupted run."""
    ### BEGIN SOLUTION
    clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda name: name.endswith("hook_resid_pre"))
    clean_ld = logit_diff(clean_logits, answer_ids, end_pos).mean()
    corrupted_ld = logit_diff(model(corrupted_tokens), answer_ids, end_pos).mean()
    n_pos = clean_tokens.shape[1]
    out = torch.zeros(model.cfg.n_layers, n_pos)
    for layer in range(model.cfg.n_layers):
        for pos in range(n_pos):
            def hook(resid, hook, layer=layer, pos=pos):
                resid[:, pos] = clean_cache["resid_pre", layer][:, pos]
                return resid
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", hook)])
            out[layer, pos] = patching_metric(logit_diff(logits, answer_ids, end_pos).mean(), clean_ld, corrupted_ld)
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_patch_residual", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(patch_residual)

# %% [markdown]
# Your residual-stream patching on the one-template batch (clean vs flipped). Red is 1 (fully restored), white 0,
# blue negative. Before layer 0 only the S2 position differs between the two prompts, so restoring it gives exactly
# 1 and any other position exactly 0. Follow the red cell down the layers: where it leaves S2 for END, a layer has
# moved the information. ("name 1" and "name 2" are the first two names: IO and S1 swap places between the ABBA and
# BABA prompts of the batch, so those columns are not IO or S1 throughout.) On GPT-2 small, the heads that move
# information from S2 to END, the S-inhibition heads, sit in layers 7 and 8 (Wang et al., section 3.2), so expect the
# move there. If you are on the offline model, you should see S2 stay red (near 1) up to the last layer and END stay
# white (near 0): only the last layer moves it.

# %%
def position_labels(d: ioi.IOIData) -> list[str]:
    """Token labels of the first prompt, with the roles of the name positions (one-template batches only)."""
    labels = [f"{i}: {t}" for i, t in enumerate(model.to_str_tokens(d.tokens[0]))]
    first, second = sorted([int(d.word_idx["IO"][0]), int(d.word_idx["S1"][0])])
    for pos, role in [(first, "name 1"), (second, "name 2"), (int(d.word_idx["S2"][0]), "S2"), (int(d.word_idx["end"][0]), "END")]:
        labels[pos] = f"{pos}: [{role}]"
    return labels


resid_patch = patch_residual(model, data.tokens, flipped, data.answer_ids, data.word_idx["end"])
plots.heatmap(resid_patch, x_labels=position_labels(data), y_labels=range(cfg.n_layers), x_title="position",
              y_title="layer (resid_pre)", title="Restoring the clean residual stream (1 = fully restored)", zmax=1)

# %% [markdown]
# ## Exercise: patch each head's output
# > Difficulty 3/5 · Importance 5/5 · ~15 min
#
# Now the heads. A head's output is `z @ W_O`, so restoring its `z` (`blocks.{layer}.attn.hook_z`,
# `[batch, pos, n_heads, d_head]`) at every position restores its output.
#
# Build `patch_head_outputs(model, clean_tokens, corrupted_tokens, answer_ids, end_pos)`: for every head, run
# the corrupted tokens with that head's clean `z` restored at all positions; return the normalised metric,
# `[n_layers, n_heads]`. It works when it matches `patching.get_act_patch_attn_head_out_all_pos`.
#
# <details><summary>Hint 1</summary>The sweep of the previous exercise, with one head instead of one position: the head axis of <code>hook_z</code> is axis 2.</details>
# <details><summary>Hint 2</summary>A hook on <code>blocks.{layer}.attn.hook_z</code> that copies the cached clean values of one head (every position) into the corrupted run's tensor.</details>

# %% nbgrader={"grade": false, "grade_id": "patch_head_outputs", "locked": false, "schema_version": 3, "solution": true}
def patch_head_outputs(model, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
                       answer_ids: Int[Tensor, "batch 2"], end_pos: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]:
    """Normalised metric after restoring one head's clean z (all positions) in the corrupted run."""
    ### BEGIN SOLUTION
    clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda name: name.endswith("hook_z"))
    clean_ld = logit_diff(clean_logits, answer_ids, end_pos).mean()
    corrupted_ld = logit_diff(model(corrupted_tokens), answer_ids, end_pos).mean()
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            def hook(z, hook, layer=layer, head=head):
                z[:, :, head] = clean_cache["z", layer][:, :, head]
                return z
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
            out[layer, head] = patching_metric(logit_diff(logits, answer_ids, end_pos).mean(), clean_ld, corrupted_ld)
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_patch_head_outputs", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(patch_head_outputs)

# %% [markdown]
# On GPT-2 small the work is spread over a circuit of many heads: you should see several heads each restore part of
# the logit difference and none restore it all (an online test checks this with the reference solution). If you are
# on the offline model, you should see the top head from Part 2 restore nearly all of it on its own.

# %%
head_patch = patch_head_outputs(model, data.tokens, flipped, data.answer_ids, data.word_idx["end"])
plots.layer_head_grid(head_patch, title="Restoring one head's output (1 = fully restored)", zmax=1)

# %% [markdown]
# ## Exercise: patch patterns, values, queries and keys
# > Difficulty 3/5 · Importance 5/5 · ~15 min
#
# A head can matter because of **where** it looks (its attention pattern, set by queries and keys) or **what**
# it moves (its values). Restoring only the pattern, or only the values, tells them apart. Wang et al. split a
# head's inputs the same way, into queries, keys and values, when they trace the circuit back (sections 3.2 and 3.3).
#
# Build `patch_head_activation(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, activation)` with
# `activation` one of `"z"`, `"q"`, `"k"`, `"v"`, `"pattern"` (hooks `blocks.{layer}.attn.hook_{activation}`);
# return `[n_layers, n_heads]` as in the previous exercise. Careful: `hook_q/k/v/z` are
# `[batch, pos, n_heads, d_head]` but `hook_pattern` is `[batch, n_heads, q_pos, k_pos]`: the head axis moves.
# It works when `"z"` gives `patch_head_outputs` and `"pattern"` matches `get_act_patch_attn_head_pattern_all_pos`.
#
# <details><summary>Hint 1</summary>The head axis depends on the activation: 1 for <code>"pattern"</code>, 2 otherwise.</details>
# <details><summary>Hint 2</summary><code>Tensor.select(axis, head)</code> is a view along any axis and <code>Tensor.copy_</code> writes into it; or build an index tuple with <code>slice(None)</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "patch_head_activation", "locked": false, "schema_version": 3, "solution": true}
def patch_head_activation(model, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
                          answer_ids: Int[Tensor, "batch 2"], end_pos: Int[Tensor, "batch"],
                          activation: str) -> Float[Tensor, "n_layers n_heads"]:
    """Normalised metric after restoring one head's clean q, k, v, z or pattern (all positions)."""
    ### BEGIN SOLUTION
    assert activation in ("z", "q", "k", "v", "pattern"), activation
    axis = 1 if activation == "pattern" else 2
    suffix = f"hook_{activation}"
    clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda name: name.endswith(suffix))
    clean_ld = logit_diff(clean_logits, answer_ids, end_pos).mean()
    corrupted_ld = logit_diff(model(corrupted_tokens), answer_ids, end_pos).mean()
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.attn.{suffix}"
        for head in range(model.cfg.n_heads):
            def hook(act, hook, name=name, head=head):
                act.select(axis, head).copy_(clean_cache[name].select(axis, head))
                return act
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
            out[layer, head] = patching_metric(logit_diff(logits, answer_ids, end_pos).mean(), clean_ld, corrupted_ld)
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_patch_head_activation", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(patch_head_activation)

# %% [markdown]
# Patterns against values for every head, on one shared colour scale (-1 to 1) so that the two grids can be compared
# cell by cell (on GPT-2 small on a CPU this takes a few minutes). On GPT-2 small the paper's account predicts a
# split: the S-inhibition heads matter through their **values** (they carry what they read at S2; section 3.3), the
# name movers through their **patterns** (what the S-inhibition heads write at END steers their queries away from S;
# section 3.2); an online test checks this split with the reference solution. If you are on the offline model, you
# should see its top head
# matter through its values only: restoring its pattern does nothing, restoring its values restores nearly
# everything. It looks at S2 whatever the name there; what differs is *which name* it reads there.

# %%
pattern_patch = patch_head_activation(model, data.tokens, flipped, data.answer_ids, data.word_idx["end"], "pattern")
value_patch = patch_head_activation(model, data.tokens, flipped, data.answer_ids, data.word_idx["end"], "v")
plots.layer_head_grid(pattern_patch, title="Restoring one head's attention pattern", zmax=1).show()
plots.layer_head_grid(value_patch, title="Restoring one head's values", zmax=1)

# %% [markdown]
# ### Recap of Part 4
# - The normalised metric puts every patching result on one scale: 0 = corrupted, 1 = clean.
# - Residual patching shows where the information about "which name is repeated" sits, and where it moves.
# - Patching patterns against values separates where a head looks from what it reads.
# - If you are on the offline model: the information stays at S2 until the last layer, and one head moves it by
#   its **values**, looking at S2 by position.

# %% [markdown]
# # Part 5 · Path patching
#
# **Learning objectives**
# - Measure the effect of one head *through one path only*, by freezing every other head.
# - Find which earlier heads feed a later head's queries, keys or values.
#
# Activation patching of a head measures its **total** effect, through every later component. Path patching
# (Wang et al., section 3.1 and appendix B) isolates one path: sender head → receivers. Here we run it the way
# they do, and **the direction switches**: Part 4 *denoised* (ran the corrupted prompts and restored clean
# activations); this part **noises** (runs the clean prompts and brings in the sender's activation from the ABC
# distribution, where the answer is undetermined). The baseline is now the clean run:
#
# 1. cache every head's `z` on the clean and on the ABC tokens;
# 2. run the clean tokens with the sender's `z` taken from the ABC run and **every other head frozen** to its
#    clean `z` (MLPs are not frozen: they are recomputed, so they count as part of the path); record the
#    receivers' inputs;
# 3. run the clean tokens with only the receivers' inputs replaced by those of step 2.
#
# Only what travels sender → (MLPs) → receiver changed. We report `(LD - clean LD) / (clean LD - ABC LD)`:
# 0 = no effect, -1 = the whole logit difference lost (so on these grids blue means "this path carries the answer").

# %% [markdown]
# ## Exercise: path patching from each head to the logits
# > Difficulty 4/5 · Importance 5/5 · ~25 min
#
# When the receiver is the final residual stream, steps 2 and 3 merge: step 2's logits are the answer. This is
# how Wang et al. found the heads that affect the logits directly (section 3.1).
#
# Build `path_patch_to_logits(model, clean_tokens, corrupted_tokens, answer_ids, end_pos)`: for every sender head,
# run the clean tokens with **every** layer's `z` hooked: all heads get their clean `z`, except the sender, which
# gets its corrupted `z` (all positions). Return `[n_layers, n_heads]`: `patching_metric(...) - 1` of the mean logit
# difference, with clean and corrupted mean logit differences from plain runs. It works when the last layer's
# row equals plain activation patching of those heads (nothing downstream to freeze).
#
# <details><summary>Hint 1</summary>Cache <code>hook_z</code> of every layer on both token sets once, before the loop over senders. Each sender's run then needs a hook on every layer's <code>hook_z</code>, not only on the sender's layer.</details>
# <details><summary>Hint 2</summary>A hook (matched by a names filter on every layer) that returns a new tensor: a clone of the clean cached <code>z</code> of its layer (<code>hook.name</code> says which), with the sender's head taken from the corrupted cache in the sender's layer.</details>

# %% nbgrader={"grade": false, "grade_id": "path_patch_to_logits", "locked": false, "schema_version": 3, "solution": true}
def path_patch_to_logits(model, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
                         answer_ids: Int[Tensor, "batch 2"], end_pos: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]:
    """Effect of each sender head on the logits with every other head frozen: (LD - clean) / (clean - corrupted)."""
    ### BEGIN SOLUTION
    is_z = lambda name: name.endswith("hook_z")
    clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=is_z)
    corrupted_logits, corrupted_cache = model.run_with_cache(corrupted_tokens, names_filter=is_z)
    clean_ld = logit_diff(clean_logits, answer_ids, end_pos).mean()
    corrupted_ld = logit_diff(corrupted_logits, answer_ids, end_pos).mean()
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for sender_layer in range(model.cfg.n_layers):
        for sender_head in range(model.cfg.n_heads):
            def freeze(z, hook, sender_layer=sender_layer, sender_head=sender_head):
                new = clean_cache[hook.name].clone()
                if hook.name == f"blocks.{sender_layer}.attn.hook_z":
                    new[:, :, sender_head] = corrupted_cache[hook.name][:, :, sender_head]
                return new
            logits = model.run_with_hooks(clean_tokens, fwd_hooks=[(is_z, freeze)])
            ld = logit_diff(logits, answer_ids, end_pos).mean()
            out[sender_layer, sender_head] = patching_metric(ld, clean_ld, corrupted_ld) - 1
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_path_patch_to_logits", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(path_patch_to_logits)

# %% [markdown]
# On GPT-2 small, Wang et al. find the name movers 9.9, 9.6 and 10.0 with the largest negative effects and the
# negative name movers 10.7 and 11.10 with positive ones (section 3.1). If you are on the offline model, you
# should see one head near -1: its path to the logits (directly and through the final MLP, which is recomputed)
# carries the whole logit difference.

# %%
path_logits = path_patch_to_logits(model, data.tokens, abc.tokens, data.answer_ids, data.word_idx["end"])
plots.layer_head_grid(path_logits, title="Path patching sender → logits (0 = no effect, -1 = all lost)", zmax=1)

# %% [markdown]
# ## Exercise: path patching into a head's queries, keys or values
# > Difficulty 4/5 · Importance 5/5 · ~30 min
#
# Wang et al. traced the circuit backwards this way: which heads change the name movers' **queries** at END?
# The S-inhibition heads 7.3, 7.9, 8.6, 8.10 (section 3.2). Which heads change the S-inhibition heads'
# **values** at S2? Induction and duplicate-token heads (section 3.3, "Which heads affect S-Inhibition values?";
# the S-inhibition heads' queries had no significant direct effect there, and their keys are in appendix C).
#
# Build `path_patch_to_heads(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, receivers, receiver_input,
# receiver_pos)`: `receivers` is a list of `(layer, head)`, `receiver_input` one of `"q"`, `"k"`, `"v"`,
# `receiver_pos` a `[batch]` tensor of positions (e.g. END) or `None` for all positions. For every sender head in
# a layer **below** the lowest receiver layer: step 2 (above) recording the receivers' `hook_{receiver_input}`;
# step 3 writing those into the receiver heads only (at `receiver_pos[b]` of each prompt `b`, or everywhere).
# Return `[n_layers, n_heads]` with `patching_metric(...) - 1` for possible senders and 0 for the others. It works
# when senders that cannot reach the receivers give 0.
#
# <details><summary>Hint 1</summary>Step 2 is a cached run with the freezing hook of the previous exercise still attached; step 3 is a plain hooked run that overwrites only the receiver heads' inputs (and only at <code>receiver_pos</code> when it is given).</details>
# <details><summary>Hint 2</summary><code>model.run_with_cache</code> inside <code>with model.hooks(fwd_hooks=...):</code> for step 2; for step 3, <code>hook_q</code> is <code>[batch, pos, n_heads, d_head]</code>, and one position per prompt is advanced indexing with <code>torch.arange(batch)</code> and <code>receiver_pos</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "path_patch_to_heads", "locked": false, "schema_version": 3, "solution": true}
def path_patch_to_heads(model, clean_tokens: Int[Tensor, "batch pos"], corrupted_tokens: Int[Tensor, "batch pos"],
                        answer_ids: Int[Tensor, "batch 2"], end_pos: Int[Tensor, "batch"],
                        receivers: list[tuple[int, int]], receiver_input: str,
                        receiver_pos: Int[Tensor, "batch"] | None = None) -> Float[Tensor, "n_layers n_heads"]:
    """Effect of each sender head through the receivers' q, k or v only: (LD - clean) / (clean - corrupted)."""
    ### BEGIN SOLUTION
    assert receiver_input in ("q", "k", "v"), receiver_input
    is_z = lambda name: name.endswith("hook_z")
    clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=is_z)
    corrupted_logits, corrupted_cache = model.run_with_cache(corrupted_tokens, names_filter=is_z)
    clean_ld = logit_diff(clean_logits, answer_ids, end_pos).mean()
    corrupted_ld = logit_diff(corrupted_logits, answer_ids, end_pos).mean()
    receiver_names = {f"blocks.{layer}.attn.hook_{receiver_input}" for layer, _ in receivers}
    rows = torch.arange(clean_tokens.shape[0])
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for sender_layer in range(min(layer for layer, _ in receivers)):
        for sender_head in range(model.cfg.n_heads):
            def freeze(z, hook, sender_layer=sender_layer, sender_head=sender_head):
                new = clean_cache[hook.name].clone()
                if hook.name == f"blocks.{sender_layer}.attn.hook_z":
                    new[:, :, sender_head] = corrupted_cache[hook.name][:, :, sender_head]
                return new
            with model.hooks(fwd_hooks=[(is_z, freeze)]):  # step 2
                _, patched = model.run_with_cache(clean_tokens, names_filter=lambda name: name in receiver_names)

            def write_receivers(act, hook):  # step 3
                for layer, head in receivers:
                    if hook.name == f"blocks.{layer}.attn.hook_{receiver_input}":
                        if receiver_pos is None:
                            act[:, :, head] = patched[hook.name][:, :, head]
                        else:
                            act[rows, receiver_pos, head] = patched[hook.name][rows, receiver_pos, head]
                return act
            logits = model.run_with_hooks(clean_tokens, fwd_hooks=[(lambda name: name in receiver_names, write_receivers)])
            ld = logit_diff(logits, answer_ids, end_pos).mean()
            out[sender_layer, sender_head] = patching_metric(ld, clean_ld, corrupted_ld) - 1
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_path_patch_to_heads", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(path_patch_to_heads)

# %% [markdown]
# The receivers: on GPT-2 small, the paper's three name movers, through their queries at END (a few minutes on a
# CPU); you should find heads in layers 7 and 8 standing out, as Wang et al. report (section 3.2; an online test
# checks that S-inhibition heads are among the most negative senders). If you are on the offline model, the
# receiver is its top head, through its queries at END and its keys and values at every position, and the three
# grids share one colour scale so that you can compare them. You should see that layer-0 heads act on it through
# its **values** far more than through its queries or keys: consistent with Part 4, where its pattern did not
# matter.

# %%
receivers = WANG_HEADS["name mover"] if using_gpt2 else [top_head]
inputs = ["q"] if using_gpt2 else ["q", "k", "v"]
path_heads = {}
for inp in inputs:
    pos = data.word_idx["end"] if inp == "q" else None
    path_heads[inp] = path_patch_to_heads(model, data.tokens, abc.tokens, data.answer_ids, data.word_idx["end"],
                                          receivers, inp, pos)
shared_zmax = max(grid.abs().max().item() for grid in path_heads.values()) or 1.0  # one scale for all three grids
for inp in inputs:
    where = "at END" if inp == "q" else "at every position"
    plots.layer_head_grid(path_heads[inp], title=f"Path patching sender → {receivers} {inp} {where}",
                          zmax=shared_zmax).show()

# %% [markdown]
# ### Recap of Part 5
# - Path patching freezes every head but one sender and measures one path: to the logits, or into chosen heads'
#   queries, keys or values.
# - GPT-2 small (Wang et al.): the name movers write the answer; S-inhibition heads set their queries;
#   induction and duplicate-token heads feed the S-inhibition heads.
# - If you are on the offline model: one head carries the whole effect to the logits, and what earlier layers
#   contribute reaches it through its values.

# %% [markdown]
# # Part 6 · Classifying heads
#
# **Learning objectives**
# - Score heads for previous-token, duplicate-token and induction behaviour on repeated tokens.
# - Measure whether a head's OV circuit copies names (the copy score) or suppresses them.
# - Combine scores into a rule-based classification, and compare it with the paper's classes.
#
# ## Exercise: previous-token, duplicate-token and induction scores
# > Difficulty 2/5 · Importance 4/5 · ~15 min
#
# On a sequence `BOS + R + R` (a block `R` of `n` tokens, then the same block again), each kind of head has a
# signature diagonal (chapter 1; Wang et al., section 3.3 and appendices H and I, where they score GPT-2 small's
# heads on repeated random tokens):
# - a **previous-token** head attends from every position `q` to `q - 1`;
# - a **duplicate-token** head attends from a token of the second copy to the same token in the first copy: `q - n`;
# - an **induction** head attends from a token of the second copy to the token *after* its first occurrence:
#   `q - n + 1`.
#
# Build `repeated_token_head_scores(pattern)`: `pattern` is one layer's `[batch, n_heads, 2n+1, 2n+1]` on such
# sequences; return a dict with keys `"previous token"`, `"duplicate token"`, `"induction"`, each `[n_heads]`:
# the mean attention on its diagonal, over the batch and over the query positions it applies to: every query
# `1..2n` for previous-token, the `n` queries of the second copy (`n+1..2n`) for the other two. It works when a
# perfect induction pattern scores 1 on induction and 0 on duplicate-token.
#
# <details><summary>Hint 1</summary>Each score is the mean of one diagonal of the pattern, over the queries it applies to: for each offset, work out which query the first entry of that diagonal belongs to.</details>
# <details><summary>Hint 2</summary><code>Tensor.diagonal(offset, dim1=-2, dim2=-1)</code> is <code>[batch, n_heads, length]</code>, its entries the queries from <code>-offset</code> up to <code>2n</code>: for offset <code>-n</code> the first entry is query <code>n</code> (the end of the first copy), for offset <code>1 - n</code> the first two are first-copy queries.</details>

# %% nbgrader={"grade": false, "grade_id": "repeated_token_head_scores", "locked": false, "schema_version": 3, "solution": true}
def repeated_token_head_scores(pattern: Float[Tensor, "batch n_heads seq seq"]) -> dict[str, Float[Tensor, "n_heads"]]:
    """Previous-token, duplicate-token and induction scores of each head on BOS + R + R (|R| = n, seq = 2n + 1)."""
    ### BEGIN SOLUTION
    n = (pattern.shape[-1] - 1) // 2

    def diagonal(offset: int, skip: int) -> Tensor:
        return pattern.diagonal(offset, dim1=-2, dim2=-1)[..., skip:].mean(dim=(0, -1))

    return {"previous token": diagonal(-1, 0), "duplicate token": diagonal(-n, 1), "induction": diagonal(1 - n, 2)}
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_repeated_token_head_scores", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(repeated_token_head_scores)

# %% [markdown]
# The scores of every head on repeated blocks of 10 distinct names. On GPT-2 small, compare with the paper's
# induction heads (5.5, 5.8, 5.9, 6.9), duplicate-token heads (0.1, 0.10, 3.0) and previous-token heads (2.2,
# 4.11); the paper itself calls 5.8, 5.9 and 0.10 "fuzzy" and notes that 0.10 does not stand out on repeated random
# tokens (appendices C and I), so not every one of them need score high here. If you are on the offline model, you should see no head above 0.4 on any of the three: trained on IOI
# sentences alone, it has none of these heads.

# %%
name_ids_all = torch.tensor([model.to_single_token(" " + name) for name in ioi.NAMES])
gen = torch.Generator().manual_seed(0)
block = torch.stack([name_ids_all[torch.randperm(len(name_ids_all), generator=gen)[:10]] for _ in range(16)])
rep_tokens = torch.cat([torch.full((16, 1), model.tokenizer.bos_token_id), block, block], dim=1)
_, rep_cache = model.run_with_cache(rep_tokens, names_filter=lambda name: name.endswith("hook_pattern"))
per_layer = [repeated_token_head_scores(rep_cache["pattern", layer]) for layer in range(cfg.n_layers)]
rep_scores = {kind: torch.stack([s[kind] for s in per_layer]) for kind in per_layer[0]}
for kind, scores in rep_scores.items():
    plots.layer_head_grid(scores, title=f"{kind} score", diverging=False, range_color=[0, 1]).show()

# %% [markdown]
# ## Exercise: the OV copy score
# > Difficulty 3/5 · Importance 4/5 · ~20 min
#
# Does a head *copy* the name it attends to? Wang et al. (section 3.1) take the residual stream at a name after
# the first MLP layer, pass it through the head's OV circuit and the unembedding, and ask whether the same name
# comes out among the top 5 logits: the fraction of names for which it does is the **copy score**. We approximate
# that residual stream, as common replications do, by the name's embedding plus MLP 0 applied to it (attention
# skipped). With the OV circuit negated, the same count is the **negative copy
# score** of heads that suppress what they attend to. We rank among the names only (the offline model never
# learnt to use the rest of the vocabulary).
#
# Build `ov_copy_score(model, layer, head, name_ids, k, negative)`: for names `name_ids` `[n_names]`:
# 1. `x = W_E[name_ids]`; `x = x + model.blocks[0].mlp(model.blocks[0].ln2(x))`;
# 2. `out = model.blocks[layer].ln1(x) @ W_V[layer, head] @ W_O[layer, head]` (no biases), negated if `negative`;
# 3. `logits = model.ln_final(out) @ W_U[:, name_ids]` (`[n_names, n_names]`).
#
# Return the fraction (a float) of rows `i` whose entry `i` is among the row's `k` largest. It works when `k`
# equal to the number of names gives 1.
#
# <details><summary>Hint 1</summary>The LayerNorm modules take any <code>[..., d_model]</code> tensor; in compatibility mode they only centre and normalise.</details>
# <details><summary>Hint 2</summary><code>Tensor.topk</code> along the last axis gives each row's <code>k</code> best columns; a row counts when its own index is among them.</details>

# %% nbgrader={"grade": false, "grade_id": "ov_copy_score", "locked": false, "schema_version": 3, "solution": true}
def ov_copy_score(model, layer: int, head: int, name_ids: Int[Tensor, "n_names"], k: int = 5,
                  negative: bool = False) -> float:
    """Fraction of names whose own logit is among the k largest after the head's OV circuit (negated if asked)."""
    ### BEGIN SOLUTION
    x = model.W_E[name_ids]
    x = x + model.blocks[0].mlp(model.blocks[0].ln2(x))
    out = model.blocks[layer].ln1(x) @ model.W_V[layer, head] @ model.W_O[layer, head]
    if negative:
        out = -out
    logits = model.ln_final(out) @ model.W_U[:, name_ids]
    top = logits.topk(k, dim=-1).indices
    return (top == torch.arange(len(name_ids))[:, None]).any(dim=-1).float().mean().item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_ov_copy_score", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(ov_copy_score)

# %% [markdown]
# Copy scores of every head. Wang et al. report that the name movers' copy scores are far above a typical
# head's (above 95 % against under 20 %), and that the negative name movers score high on the negative copy score
# (98 % against 12 %; section 3.1); our version ranks among names only, so its numbers are not theirs. If you are
# on the offline model, you should see its top head score close to 1 on the **negative** copy score (it writes
# minus the name it reads), and the heads that attend to both names copy rather than suppress (copy score above
# negative copy score, clearly so for the one that attends to them most): they copy both names, which cancels in
# the logit difference.

# %%
copy_scores = torch.tensor([[ov_copy_score(model, layer, h, name_ids_all) for h in range(cfg.n_heads)] for layer in range(cfg.n_layers)])
neg_copy_scores = torch.tensor([[ov_copy_score(model, layer, h, name_ids_all, negative=True) for h in range(cfg.n_heads)]
                                for layer in range(cfg.n_layers)])
plots.layer_head_grid(copy_scores, title="Copy score (top 5 among names)", diverging=False, range_color=[0, 1]).show()
plots.layer_head_grid(neg_copy_scores, title="Negative copy score", diverging=False, range_color=[0, 1])

# %% [markdown]
# ## Exercise: classify the heads
# > Difficulty 3/5 · Importance 4/5 · ~20 min
#
# Put the scores together. Each class is a rule on scores you have computed (every score is
# `[n_layers, n_heads]`; a head may land in several classes or none):
#
# | class | rule |
# |---|---|
# | name mover | `dla >= dla_threshold`, `attn_io >= attn_threshold`, and `attn_io` above both `attn_s1` and `attn_s2` |
# | negative name mover | `dla <= -dla_threshold`, and the same attention rule |
# | S-inhibition | `attn_s2 >= attn_threshold` and `abs(dla) < dla_threshold` (it reads S2 but writes no answer itself) |
# | negative S mover | `attn_s2 >= attn_threshold` and `dla >= dla_threshold` (it reads S2 and writes minus S) |
# | previous token / duplicate token / induction | that score `>= pattern_threshold` |
#
# The "negative S mover" class is not in the paper: GPT-2 small needs no such head, but a head that reads S and
# suppresses it is a possible way to solve the task (compare "copy suppression", McDougall et al. 2023).
#
# Build `classify_heads(scores, dla_threshold, attn_threshold, pattern_threshold)`: `scores` has keys `"dla"`,
# `"attn_io"`, `"attn_s1"`, `"attn_s2"`, `"previous token"`, `"duplicate token"`, `"induction"`. Return a dict with
# the seven class names of the table as keys (the last row is three classes), each a list of `(layer, head)` tuples (any order). It works on a grid you
# fill by hand.
#
# <details><summary>Hint 1</summary>Mind the signs: a negative name mover has a large <i>negative</i> attribution; compare with <code>-dla_threshold</code>, not with <code>abs</code>. And the thresholds are inclusive.</details>
# <details><summary>Hint 2</summary>One boolean <code>[n_layers, n_heads]</code> mask per class from element-wise comparisons and <code>&amp;</code>; <code>Tensor.nonzero</code> lists a mask's cells.</details>

# %% nbgrader={"grade": false, "grade_id": "classify_heads", "locked": false, "schema_version": 3, "solution": true}
def classify_heads(scores: dict[str, Float[Tensor, "n_layers n_heads"]], dla_threshold: float,
                   attn_threshold: float = 0.3, pattern_threshold: float = 0.4) -> dict[str, list[tuple[int, int]]]:
    """Head classes by rules on direct attribution, attention from END, and repeated-token scores."""
    ### BEGIN SOLUTION
    dla, io, s1, s2 = scores["dla"], scores["attn_io"], scores["attn_s1"], scores["attn_s2"]
    reads_io = (io >= attn_threshold) & (io > s1) & (io > s2)
    reads_s2 = s2 >= attn_threshold
    masks = {
        "name mover": reads_io & (dla >= dla_threshold),
        "negative name mover": reads_io & (dla <= -dla_threshold),
        "S-inhibition": reads_s2 & (dla.abs() < dla_threshold),
        "negative S mover": reads_s2 & (dla >= dla_threshold),
    }
    for kind in ("previous token", "duplicate token", "induction"):
        masks[kind] = scores[kind] >= pattern_threshold
    return {kind: [tuple(x) for x in mask.nonzero().tolist()] for kind, mask in masks.items()}
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_classify_heads", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(classify_heads)

# %% [markdown]
# Your classification, with the attribution threshold at a tenth of the mean logit difference. On GPT-2 small,
# compare with the paper's classes printed beside it: the rules are crude (one batch, fixed thresholds, and the
# paper used path patching, not only scores, to assign S-inhibition heads), so expect overlap, not identity.
# If you are on the offline model, you should see one class filled: its top head is a **negative S mover**, and
# there are no name movers, S-inhibition, duplicate-token, induction or previous-token heads.

# %%
mean_ld = logit_diff(model(mixed.tokens), mixed.answer_ids, mixed.word_idx["end"]).mean().item()
scores = {"dla": head_dla, "attn_io": attn["IO"], "attn_s1": attn["S1"], "attn_s2": attn["S2"], **rep_scores}
classes = classify_heads(scores, dla_threshold=0.1 * mean_ld)
for kind, heads in classes.items():
    paper = f"   (paper: {WANG_HEADS[kind]})" if using_gpt2 and kind in WANG_HEADS else ""
    print(f"{kind:20s} {[f'L{layer}H{h}' for layer, h in heads]}{paper}")

# %% [markdown]
# ### Recap of Part 6
# - Repeated-token diagonals find previous-token, duplicate-token and induction heads; the OV copy score says
#   whether a head copies or suppresses what it reads.
# - GPT-2 small (Wang et al.): 26 heads in 7 classes, from duplicate-token heads in layer 0 to name movers in
#   layers 9-10.
# - If you are on the offline model: one negative S mover, heads that copy both names alike, and none of the
#   pattern-based classes.

# %% [markdown]
# # Part 7 · Is this the circuit? Mean ablation, faithfulness and backup heads
#
# **Learning objectives**
# - Mean-ablate heads over the ABC distribution, position by position.
# - Measure the faithfulness of a circuit: the logit difference with everything outside it ablated.
# - Look for backup heads: heads whose contribution grows when others are ablated.
#
# Wang et al. test their circuit by **knocking out** every head outside it: replacing its output by its mean
# over ABC prompts, so the head still writes something typical but nothing about *these* names (sections 2.1 and
# 4). The ratio of the circuit's logit difference to the model's is its **faithfulness**. We average over ABC prompts
# of one template, so that each position's mean is taken over the same word of the template, and (unlike the
# paper, which keeps some heads only at some positions) we ablate whole heads at every position; MLPs are kept.

# %% [markdown]
# ## Exercise: mean activations over the ABC distribution
# > Difficulty 1/5 · Importance 3/5 · ~5 min
#
# Build `mean_head_activations(model, ref_tokens)`: `ref_tokens` `[batch, pos]` (ABC prompts of one template);
# return `[n_layers, pos, n_heads, d_head]`, every layer's `hook_z` averaged over the batch. It works when it
# matches the cache's `z` averaged over prompts.
#
# <details><summary>Hint 1</summary>One cached run over the reference prompts; average over the prompts only, never over positions.</details>
# <details><summary>Hint 2</summary><code>model.run_with_cache</code> with a <code>names_filter</code> for <code>hook_z</code>, <code>Tensor.mean(0)</code> per layer, <code>torch.stack</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "mean_head_activations", "locked": false, "schema_version": 3, "solution": true}
def mean_head_activations(model, ref_tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "n_layers pos n_heads d_head"]:
    """Every layer's z averaged over the reference prompts, position by position."""
    ### BEGIN SOLUTION
    _, cache = model.run_with_cache(ref_tokens, names_filter=lambda name: name.endswith("hook_z"))
    return torch.stack([cache["z", layer].mean(0) for layer in range(model.cfg.n_layers)])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_mean_head_activations", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(mean_head_activations)

# %% [markdown]
# ## Exercise: mean-ablate a set of heads
# > Difficulty 3/5 · Importance 5/5 · ~15 min
#
# Build `mean_ablate_heads(model, tokens, answer_ids, end_pos, means, heads)`: run `tokens` with the `z` of every
# head in `heads` (a list of `(layer, head)`) replaced, at every position, by `means[layer, pos, head]` (the same
# for every prompt); return the logit difference `[batch]`. With `heads = []` it is the plain logit difference.
# It works when ablating with means of the very same single prompt changes nothing.
#
# <details><summary>Hint 1</summary>The means are the same for every prompt, so one write per ablated head covers the whole batch; group the heads by layer so that each layer needs one hook.</details>
# <details><summary>Hint 2</summary>A hook on <code>blocks.{layer}.attn.hook_z</code> that overwrites the ablated heads' entries with <code>means[layer]</code> (broadcast over the batch) and returns the tensor; <code>model.run_with_hooks</code>, then your <code>logit_diff</code>.</details>

# %% nbgrader={"grade": false, "grade_id": "mean_ablate_heads", "locked": false, "schema_version": 3, "solution": true}
def mean_ablate_heads(model, tokens: Int[Tensor, "batch pos"], answer_ids: Int[Tensor, "batch 2"],
                      end_pos: Int[Tensor, "batch"], means: Float[Tensor, "n_layers pos n_heads d_head"],
                      heads: list[tuple[int, int]]) -> Float[Tensor, "batch"]:
    """Logit difference with the listed heads' z replaced by their means (every position)."""
    ### BEGIN SOLUTION
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    hooks = []
    for layer, hs in by_layer.items():
        def hook(z, hook, layer=layer, hs=hs):
            z[:, :, hs] = means[layer][: z.shape[1], hs]
            return z
        hooks.append((f"blocks.{layer}.attn.hook_z", hook))
    return logit_diff(model.run_with_hooks(tokens, fwd_hooks=hooks), answer_ids, end_pos)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_mean_ablate_heads", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(mean_ablate_heads)

# %% [markdown]
# Mean-ablating one head at a time. On GPT-2 small, Wang et al. found that knocking out all three name movers at
# once costs only about 5 % of the logit difference, because backup heads take over (section 3.4 and appendix F).
# If you are on the offline model, you should see one head whose ablation takes the logit difference to about 0, and
# others whose ablation changes it little (some even raise it).

# %%
means = mean_head_activations(model, abc.tokens)
ablated = torch.tensor([[mean_ablate_heads(model, data.tokens, data.answer_ids, data.word_idx["end"], means, [(layer, h)]).mean()
                         for h in range(cfg.n_heads)] for layer in range(cfg.n_layers)])
print(f"clean mean logit difference {clean_ld:.2f}")
plots.layer_head_grid(ablated - clean_ld, title="Change in logit difference when one head is mean-ablated")

# %% [markdown]
# ## Exercise: faithfulness of a circuit
# > Difficulty 2/5 · Importance 5/5 · ~10 min
#
# Build `circuit_faithfulness(model, tokens, ref_tokens, answer_ids, end_pos, circuit)`: mean-ablate (means over
# `ref_tokens`) every head **not** in `circuit` (a list of `(layer, head)`), and return the float
# `mean LD (circuit only) / mean LD (whole model)`. 1 means the circuit alone does what the model does. It works
# when the circuit of all heads gives exactly 1.
#
# <details><summary>Hint 1</summary>Everything outside the circuit is ablated, nothing inside it; a circuit may arrive as lists <code>[layer, head]</code> rather than tuples.</details>
# <details><summary>Hint 2</summary>Your <code>mean_head_activations</code> and <code>mean_ablate_heads</code>; compare heads as tuples (<code>tuple(head)</code>).</details>

# %% nbgrader={"grade": false, "grade_id": "circuit_faithfulness", "locked": false, "schema_version": 3, "solution": true}
def circuit_faithfulness(model, tokens: Int[Tensor, "batch pos"], ref_tokens: Int[Tensor, "batch pos"],
                         answer_ids: Int[Tensor, "batch 2"], end_pos: Int[Tensor, "batch"],
                         circuit: list[tuple[int, int]]) -> float:
    """Mean logit difference with every head outside `circuit` mean-ablated, over the model's."""
    ### BEGIN SOLUTION
    means = mean_head_activations(model, ref_tokens)
    keep = {tuple(head) for head in circuit}
    outside = [(layer, h) for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads) if (layer, h) not in keep]
    circuit_ld = mean_ablate_heads(model, tokens, answer_ids, end_pos, means, outside).mean()
    model_ld = logit_diff(model(tokens), answer_ids, end_pos).mean()
    return (circuit_ld / model_ld).item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_circuit_faithfulness", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(circuit_faithfulness)

# %% [markdown]
# The faithfulness of the heads your classification found, and of no heads at all (only MLPs and mean head
# outputs left). On GPT-2 small we also run the paper's 26 heads; Wang et al. report that their circuit recovers
# 87 % of the model's logit difference (section 4), with some heads kept only at some positions, which we do not
# do, so expect a different number here. If you are on the offline model, you should see the one-head circuit recover about all of the logit
# difference, and no heads recover little.

# %%
found = sorted({head for heads in classes.values() for head in heads})
candidates = {"your classified heads": found, "no heads": []}
if using_gpt2:
    candidates["Wang et al.'s 26 heads"] = WANG_CIRCUIT
for label, circuit in candidates.items():
    f = circuit_faithfulness(model, data.tokens, abc.tokens, data.answer_ids, data.word_idx["end"], circuit)
    print(f"{label:25s} {[f'L{layer}H{h}' for layer, h in circuit]}: faithfulness {f:.2f}")

# %% [markdown]
# ## Exercise: backup heads
# > Difficulty 3/5 · Importance 4/5 · ~15 min
#
# Knock out GPT-2's three name movers and the logit difference drops far less than their direct attribution
# predicts: other heads in layers 9-11, which did little before, start copying IO. Wang et al. call them
# **backup name movers** (section 3.4; the eight heads are described in appendix F). To find such heads, compare every head's direct attribution before and
# after an ablation.
#
# Build `dla_after_ablation(model, tokens, answer_ids, end_pos, means, heads)`: with `heads` mean-ablated (as in
# `mean_ablate_heads`), return every head's direct logit attribution, `[n_layers, n_heads]` (as in `dla_by_head`,
# with the final LayerNorm scale of the ablated run). It works when ablating nothing gives `dla_by_head`.
#
# <details><summary>Hint 1</summary>The attribution must be computed in the ablated run itself, including its final LayerNorm scale.</details>
# <details><summary>Hint 2</summary>Attach the ablation hooks with <code>with model.hooks(fwd_hooks=...):</code> and call your <code>dla_by_head</code> inside: its <code>run_with_cache</code> sees the hooks.</details>

# %% nbgrader={"grade": false, "grade_id": "dla_after_ablation", "locked": false, "schema_version": 3, "solution": true}
def dla_after_ablation(model, tokens: Int[Tensor, "batch pos"], answer_ids: Int[Tensor, "batch 2"],
                       end_pos: Int[Tensor, "batch"], means: Float[Tensor, "n_layers pos n_heads d_head"],
                       heads: list[tuple[int, int]]) -> Float[Tensor, "n_layers n_heads"]:
    """Every head's direct logit attribution in a run where `heads` are mean-ablated."""
    ### BEGIN SOLUTION
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    hooks = []
    for layer, hs in by_layer.items():
        def hook(z, hook, layer=layer, hs=hs):
            z[:, :, hs] = means[layer][: z.shape[1], hs]
            return z
        hooks.append((f"blocks.{layer}.attn.hook_z", hook))
    with model.hooks(fwd_hooks=hooks):
        return dla_by_head(model, tokens, answer_ids, end_pos)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "check_dla_after_ablation", "locked": true, "points": 1, "schema_version": 3, "solution": false}
check(dla_after_ablation)

# %% [markdown]
# We ablate the heads with the largest positive attribution (on GPT-2 small, the paper's three name movers) and
# compare the naive prediction (the logit difference minus their attribution) with what happens. A head whose
# attribution rises is a backup. On GPT-2 small, expect the drop to be smaller than predicted and heads such as
# 10.10 and 10.6 to rise (Wang et al., section 3.4 and appendix F; an online test checks that the actual logit
# difference stays above the naive prediction and that the largest rise is in layers 9-11). If you are on the offline model, you should see the logit
# difference fall to about 0 and no other head's attribution change by more than a small fraction of the
# logit difference: this model has **no backup** for its top head. The last MLP's attribution collapses too: the
# MLP writes most of the answer, but only from what that head gives it.

# %%
knocked_out = WANG_HEADS["name mover"] if using_gpt2 else [top_head]
before = dla_by_head(model, data.tokens, data.answer_ids, data.word_idx["end"])
after = dla_after_ablation(model, data.tokens, data.answer_ids, data.word_idx["end"], means, knocked_out)
ablated_ld = mean_ablate_heads(model, data.tokens, data.answer_ids, data.word_idx["end"], means, knocked_out).mean()
naive = clean_ld - sum(before[head] for head in knocked_out)
print(f"clean {clean_ld:.2f}; naive prediction after ablating {knocked_out}: {naive:.2f}; actual {ablated_ld:.2f}")
change = after - before
for layer, h in knocked_out:
    change[layer, h] = 0.0  # the ablated heads themselves, not a backup effect
riser = divmod(int(change.argmax()), cfg.n_heads)
print(f"largest rise in another head's attribution: {change.max():.2f} (L{riser[0]}H{riser[1]})")


def ablation_hook(layer: int, head: int):
    def hook(z, hook):
        z[:, :, head] = means[layer][: z.shape[1], head]
        return z
    return (f"blocks.{layer}.attn.hook_z", hook)


with model.hooks(fwd_hooks=[ablation_hook(layer, h) for layer, h in knocked_out]):
    components_ablated = dla_by_component(model, data.tokens, data.answer_ids, data.word_idx["end"])
components_clean = dla_by_component(model, data.tokens, data.answer_ids, data.word_idx["end"])
print(f"last MLP's attribution: {components_clean[-1]:.2f} clean, {components_ablated[-1]:.2f} with {knocked_out} ablated")
plots.layer_head_grid(change, title=f"Change in direct attribution after ablating {knocked_out}")

# %% [markdown]
# ### Recap of Part 7
# - Mean ablation over ABC prompts removes a head's information about the names while keeping its typical output;
#   faithfulness compares the circuit alone with the whole model.
# - GPT-2 small (Wang et al.): the 26-head circuit recovers most of the logit difference, and backup name movers
#   compensate when the name movers are knocked out.
# - If you are on the offline model: one head (with the MLPs) is the circuit, and nothing backs it up.
#
# ## What you found
#
# On **GPT-2 small**, Wang et al.'s circuit: duplicate-token and induction heads mark S2 as a repeat;
# S-inhibition heads carry that to END, where they steer the name movers' queries away from S; name movers attend
# to IO and copy it; negative name movers hedge; backup name movers step in when needed.
#
# On the **offline model** (if that is what you ran), your code found a different algorithm for the same task:
# the information about which name is repeated stays at S2 until the last layer; one head there attends from END
# to S2 *by position*, reads the name at S2 through its values, and writes minus that name, which the final MLP
# turns into a preference for IO (ablate the head and the MLP's contribution goes too); other heads copy both
# names alike. It has no name movers, no S-inhibition,
# duplicate-token or induction heads, and no backup. Two models, the same behaviour, two circuits: the tools
# carry over, the conclusions do not.
