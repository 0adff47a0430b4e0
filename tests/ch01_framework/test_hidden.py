"""Hidden checks of chapter 1: each compares the learner's function with the reference on fresh inputs, with
TransformerLens on the shipped model, and checks a behaviour (masking, invariances, shapes)."""

import math

import torch

from tests.ch01_framework.conftest import N_REP
from tests.harness import as_number, assert_close, exercise, tensor_of

ATTN = ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")


# --------------------------------------------------------------------------------------------- helpers
_tensor, _num = tensor_of, as_number
_close = assert_close


def _dense(x, what):
    if isinstance(x, torch.Tensor):
        return x.detach()
    assert hasattr(x, "A") and hasattr(x, "B"), f"{what} should return a FactoredMatrix (or a tensor); got {type(x).__name__}"
    return (x.A @ x.B).detach()


def _layer(params, layer):
    return {n: params[f"blocks.{layer}.attn.{n}"] for n in ATTN}


def _masked_close(got, want, what):
    """Compare causal scores: equal on and below the diagonal, very negative (or -inf) above it."""
    got = _tensor(got, what)
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    n_q, n_k = want.shape[-2:]
    future = torch.triu(torch.ones(n_q, n_k, dtype=torch.bool), diagonal=1)
    assert (got[..., future] < -1e4).all(), f"{what}: keys after the query (above the diagonal) must be masked to -inf"
    past = ~future
    _close(got[..., past], want[..., past], f"{what} (on and below the diagonal)", atol=1e-4)


# ------------------------------------------------------------------------------------------- Part 1
@exercise("embed")
def test_embed_matches_reference_on_random_tokens(impl, ref, seed):
    W_E = torch.randn(50, 16)
    tokens = torch.randint(0, 50, (3, 7))
    out = _tensor(impl.embed(W_E, tokens), "embed")
    assert out.shape == (3, 7, 16), f"embed returned shape {tuple(out.shape)}; expected (batch, pos, d_model) = (3, 7, 16)"
    assert torch.allclose(out, ref.embed(W_E, tokens)), "embed gives the wrong rows of W_E for random tokens"


@exercise("embed")
def test_embed_single_position(impl, seed):
    W_E = torch.randn(5, 4)
    assert torch.allclose(impl.embed(W_E, torch.tensor([[2]])), W_E[2][None, None]), "embedding of token 2 should be row 2 of W_E"


@exercise("embed")
def test_embed_matches_transformerlens_on_shipped_model(impl, raw_run):
    _close(impl.embed(raw_run["params"]["embed.W_E"], raw_run["tokens"]), raw_run["cache"]["hook_embed"],
           "embed on the shipped model vs cache['hook_embed']")


@exercise("embed")
def test_embed_keeps_gradient(impl, seed):
    W_E = torch.randn(5, 4, requires_grad=True)
    impl.embed(W_E, torch.tensor([[1, 2]])).sum().backward()
    assert W_E.grad is not None and W_E.grad[1].abs().sum() > 0, "embed must be differentiable with respect to W_E"


@exercise("pos_embed")
def test_pos_embed_matches_reference_on_random_weights(impl, ref, seed):
    W_pos = torch.randn(20, 8)
    tokens = torch.randint(0, 50, (3, 7))
    _close(impl.pos_embed(W_pos, tokens), ref.pos_embed(W_pos, tokens), "pos_embed on random W_pos, batch 3, pos 7")


@exercise("pos_embed")
def test_pos_embed_matches_transformerlens_on_shipped_model(impl, raw_run):
    _close(impl.pos_embed(raw_run["params"]["pos_embed.W_pos"], raw_run["tokens"]), raw_run["cache"]["hook_pos_embed"],
           "pos_embed on the shipped model vs cache['hook_pos_embed']")


@exercise("pos_embed")
def test_pos_embed_depends_on_position_not_token(impl, seed):
    W_pos = torch.randn(10, 4)
    a = _tensor(impl.pos_embed(W_pos, torch.tensor([[1, 2, 3], [4, 5, 6]])), "pos_embed")
    b = _tensor(impl.pos_embed(W_pos, torch.tensor([[7, 7, 7], [0, 9, 1]])), "pos_embed")
    assert a.shape == (2, 3, 4), f"pos_embed should return [batch, pos, d_model] = (2, 3, 4); got {tuple(a.shape)}"
    assert torch.allclose(a, b), "pos_embed must not depend on the token ids, only on the positions"
    assert torch.allclose(a[1, 2], W_pos[2]), "position 2 of every sequence should get W_pos[2]"


@exercise("layer_norm")
def test_layer_norm_matches_reference_on_random_inputs(impl, ref, seed):
    x, w, b = torch.randn(2, 5, 16) * 3 + 1, torch.randn(16), torch.randn(16)
    _close(impl.layer_norm(x, w, b), ref.layer_norm(x, w, b), "layer_norm on random x, w, b")
    x2 = torch.randn(6, 16)
    _close(impl.layer_norm(x2, w, b), ref.layer_norm(x2, w, b), "layer_norm on a 2-D input [n, d_model]")


@exercise("layer_norm")
def test_layer_norm_matches_transformerlens_on_shipped_model(impl, raw_run):
    cache, p = raw_run["cache"], raw_run["params"]
    for layer in range(2):
        _close(impl.layer_norm(cache["resid_pre", layer], p[f"blocks.{layer}.ln1.w"], p[f"blocks.{layer}.ln1.b"]),
               cache[f"blocks.{layer}.ln1.hook_out"], f"layer_norm before layer {layer} of the shipped model", atol=1e-4)
    _close(impl.layer_norm(cache["resid_post", 1], p["ln_final.w"], p["ln_final.b"]), cache["ln_final.hook_out"],
           "the final layer_norm of the shipped model", atol=1e-4)


@exercise("layer_norm")
def test_layer_norm_normalises_and_keeps_eps_inside_the_root(impl, ref, seed):
    x = torch.randn(3, 10) * 5 + 2
    out = _tensor(impl.layer_norm(x, torch.ones(10), torch.zeros(10)), "layer_norm")
    assert out.mean(-1).abs().max() < 1e-4, "with w = 1, b = 0 every row of the output should have mean 0"
    assert (out.pow(2).mean(-1) - 1).abs().max() < 1e-3, ("with w = 1, b = 0 every row should have (biased) variance 1: "
                                                           "divide by d_model, not d_model - 1")
    tiny = torch.randn(3, 10) * 1e-3  # variance ~1e-6, smaller than eps: eps must sit inside the square root
    _close(impl.layer_norm(tiny, torch.ones(10), torch.zeros(10)), ref.layer_norm(tiny, torch.ones(10), torch.zeros(10)),
           "layer_norm of very small inputs (eps belongs inside the square root)", atol=1e-4)
    for eps in (0.5, 1e-8):  # the eps argument is used, not a fixed default
        w, b = torch.randn(10), torch.randn(10)
        _close(impl.layer_norm(x, w, b, eps), ref.layer_norm(x, w, b, eps), f"layer_norm with eps = {eps}", atol=1e-4)


@exercise("project_to_heads")
def test_project_to_heads_matches_reference_on_random_weights(impl, ref, seed):
    x, W, b = torch.randn(2, 5, 12), torch.randn(3, 12, 7), torch.randn(3, 7)
    _close(impl.project_to_heads(x, W, b), ref.project_to_heads(x, W, b),
           "project_to_heads with d_model 12, 3 heads, d_head 7 and a bias")


@exercise("project_to_heads")
def test_project_to_heads_matches_transformerlens_on_shipped_model(impl, raw_run):
    cache, p = raw_run["cache"], raw_run["params"]
    x = cache["blocks.1.ln1.hook_out"]
    for name in "QKV":
        _close(impl.project_to_heads(x, p[f"blocks.1.attn.W_{name}"], p[f"blocks.1.attn.b_{name}"]),
               cache[name.lower(), 1], f"project_to_heads for {name} in layer 1 of the shipped model", atol=1e-4)


@exercise("project_to_heads")
def test_project_to_heads_adds_the_bias_of_each_head(impl, seed):
    W, b = torch.randn(3, 6, 2), torch.randn(3, 2)
    out = _tensor(impl.project_to_heads(torch.zeros(2, 4, 6), W, b), "project_to_heads")
    assert out.shape == (2, 4, 3, 2), f"project_to_heads should return [batch, pos, n_heads, d_head] = (2, 4, 3, 2); got {tuple(out.shape)}"
    assert torch.allclose(out, b.expand(2, 4, 3, 2)), "a zero input should give each head's bias b[h] at every position"


@exercise("attention_scores")
def test_attention_scores_match_reference_on_random_inputs(impl, ref, seed):
    q, k = torch.randn(2, 6, 3, 4), torch.randn(2, 6, 3, 4)
    _masked_close(impl.attention_scores(q, k), ref.attention_scores(q, k), "attention_scores on random q, k")


@exercise("attention_scores")
def test_attention_scores_give_transformerlens_patterns(impl, raw_run):
    cache = raw_run["cache"]
    for layer in range(2):
        scores = _tensor(impl.attention_scores(cache["q", layer], cache["k", layer]), "attention_scores")
        _close(scores.softmax(-1), cache["pattern", layer], f"softmax of your scores vs cache['pattern', {layer}]", atol=1e-4)


@exercise("attention_scores")
def test_attention_scores_are_causal_and_scaled(impl, seed):
    ones = torch.ones(1, 4, 2, 9)
    out = _tensor(impl.attention_scores(ones, ones), "attention_scores")
    assert out.shape == (1, 2, 4, 4), f"attention_scores should return [batch, n_heads, q_pos, k_pos]; got {tuple(out.shape)}"
    assert torch.allclose(out[0, 0].diagonal(), torch.full((4,), 3.0)), ("scores should be q.k / sqrt(d_head): all-ones "
                                                                       "vectors of size 9 give 9 / 3 = 3, also on the diagonal")
    q, k = torch.randn(1, 5, 2, 4), torch.randn(1, 5, 2, 4)
    k2 = k.clone()
    k2[:, 3:] = torch.randn(1, 2, 2, 4)  # change keys 3 and 4 only
    a, b = impl.attention_scores(q, k).softmax(-1), impl.attention_scores(q, k2).softmax(-1)
    assert torch.allclose(a[..., :3, :], b[..., :3, :]), "queries 0-2 must not see keys 3 and 4 (causal mask)"


@exercise("attention_pattern")
def test_attention_pattern_matches_reference_on_random_scores(impl, ref, seed):
    scores = ref.attention_scores(torch.randn(2, 6, 3, 4), torch.randn(2, 6, 3, 4))
    _close(impl.attention_pattern(scores), ref.attention_pattern(scores), "attention_pattern of random masked scores")


@exercise("attention_pattern")
def test_attention_pattern_matches_transformerlens_on_shipped_model(impl, raw_run):
    pattern = raw_run["cache"]["pattern", 1]
    out = impl.attention_pattern(pattern.log())
    _close(out, pattern, "attention_pattern(log(cache['pattern', 1])) should give the pattern back", atol=1e-5)


@exercise("attention_pattern")
def test_attention_pattern_is_a_stable_softmax_over_keys(impl, seed):
    scores = torch.tensor([[[[500.0, float("-inf")], [800.0, 700.0]]]])
    out = _tensor(impl.attention_pattern(scores), "attention_pattern")
    assert torch.isfinite(out).all(), "large scores gave inf or nan: subtract each row's max before exp (or use softmax)"
    assert torch.allclose(out, torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]]), atol=1e-6), "wrong pattern for large scores"
    s = torch.randn(1, 2, 3, 3)
    out = _tensor(impl.attention_pattern(s), "attention_pattern")
    assert torch.allclose(out.sum(-1), torch.ones(1, 2, 3), atol=1e-5), "each query's attention (a row) must sum to 1 over the keys"


@exercise("attention_z")
def test_attention_z_matches_reference_on_random_inputs(impl, ref, seed):
    pattern = torch.randn(2, 3, 5, 5).softmax(-1)
    v = torch.randn(2, 5, 3, 4)
    _close(impl.attention_z(pattern, v), ref.attention_z(pattern, v), "attention_z on random pattern and values")


@exercise("attention_z")
def test_attention_z_matches_transformerlens_on_shipped_model(impl, raw_run):
    cache = raw_run["cache"]
    for layer in range(2):
        _close(impl.attention_z(cache["pattern", layer], cache["v", layer]), cache["z", layer],
               f"attention_z in layer {layer} of the shipped model vs cache['z', {layer}]", atol=1e-5)


@exercise("attention_z")
def test_attention_z_sums_over_keys_for_each_query(impl, seed):
    v = torch.randn(1, 3, 2, 4)
    pattern = torch.zeros(1, 2, 3, 3)
    pattern[0, 0, 2, 0] = 1.0  # head 0: query 2 reads key 0 only
    pattern[0, 1, 2, 1] = 1.0  # head 1: query 2 reads key 1 only
    out = _tensor(impl.attention_z(pattern, v), "attention_z")
    assert out.shape == (1, 3, 2, 4), f"attention_z should return [batch, q_pos, n_heads, d_head]; got {tuple(out.shape)}"
    assert torch.allclose(out[0, 2, 0], v[0, 0, 0]) and torch.allclose(out[0, 2, 1], v[0, 1, 1]), \
        "z at query 2 should be the value of the key it attends to, head by head"
    assert torch.allclose(out[0, :2], torch.zeros(2, 2, 4)), "queries that attend nowhere (all-zero rows) should get z = 0"


@exercise("head_results")
def test_head_results_match_reference_on_random_inputs(impl, ref, seed):
    for pos in (5, 3):  # pos == n_heads is where a broadcasting mistake hides
        z, W_O = torch.randn(2, pos, 3, 4), torch.randn(3, 4, 6)
        _close(impl.head_results(z, W_O), ref.head_results(z, W_O), f"head_results with pos {pos}, 3 heads")


@exercise("head_results")
def test_head_results_sum_to_transformerlens_attn_out(impl, raw_run):
    cache, p = raw_run["cache"], raw_run["params"]
    for layer in range(2):
        out = _tensor(impl.head_results(cache["z", layer], p[f"blocks.{layer}.attn.W_O"]), "head_results")
        _close(out.sum(2) + p[f"blocks.{layer}.attn.b_O"], cache["attn_out", layer],
               f"sum over heads of head_results + b_O vs cache['attn_out', {layer}]", atol=1e-4)


@exercise("head_results")
def test_head_results_keep_heads_separate(impl, seed):
    z, W_O = torch.randn(1, 2, 3, 4), torch.randn(3, 4, 5)
    z[:, :, 1] = 0.0
    out = _tensor(impl.head_results(z, W_O), "head_results")
    assert out.shape == (1, 2, 3, 5), f"head_results should return [batch, pos, n_heads, d_model]; got {tuple(out.shape)}"
    assert torch.allclose(out[:, :, 1], torch.zeros(1, 2, 5)), "a head whose z is zero must write nothing"
    assert torch.allclose(out[0, 1, 2], z[0, 1, 2] @ W_O[2], atol=1e-5), "head 2's result should be z[..., 2, :] @ W_O[2]"


def _random_layer(d_model=12, n_heads=3, d_head=4):
    return {"W_Q": torch.randn(n_heads, d_model, d_head), "b_Q": torch.randn(n_heads, d_head),
            "W_K": torch.randn(n_heads, d_model, d_head), "b_K": torch.randn(n_heads, d_head),
            "W_V": torch.randn(n_heads, d_model, d_head), "b_V": torch.randn(n_heads, d_head),
            "W_O": torch.randn(n_heads, d_head, d_model), "b_O": torch.randn(d_model)}


@exercise("attention_layer")
def test_attention_layer_matches_reference_on_random_weights(impl, ref, seed):
    w, x = _random_layer(), torch.randn(2, 6, 12)
    _close(impl.attention_layer(x, **w), ref.attention_layer(x, **w), "attention_layer on random weights", atol=1e-4)


@exercise("attention_layer")
def test_attention_layer_matches_transformerlens_on_shipped_model(impl, raw_run):
    cache, p = raw_run["cache"], raw_run["params"]
    for layer in range(2):
        _close(impl.attention_layer(cache[f"blocks.{layer}.ln1.hook_out"], **_layer(p, layer)), cache["attn_out", layer],
               f"attention_layer in layer {layer} of the shipped model vs cache['attn_out', {layer}]", atol=1e-4)


@exercise("attention_layer")
def test_attention_layer_is_causal_and_adds_b_O(impl, seed):
    w, x = _random_layer(), torch.randn(1, 5, 12)
    a = _tensor(impl.attention_layer(x, **w), "attention_layer")
    x2 = x.clone()
    x2[:, 4] = torch.randn(12)
    b = _tensor(impl.attention_layer(x2, **w), "attention_layer")
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-5), "changing the last position changed earlier outputs: mask the future"
    shifted = dict(w, b_O=w["b_O"] + 1.0)
    c = _tensor(impl.attention_layer(x, **shifted), "attention_layer")
    assert torch.allclose(c, a + 1.0, atol=1e-5), "adding 1 to b_O should add 1 to every output (b_O is added once, after summing heads)"


@exercise("attn_only_forward")
def test_forward_matches_transformerlens_logits_on_shipped_model(impl, raw_model, raw_run, text_tokens):
    p = raw_run["params"]
    _close(impl.attn_only_forward(raw_run["tokens"], p, 2), raw_run["logits"],
           "attn_only_forward on repeated tokens vs the shipped model's own logits", atol=1e-3)
    with torch.no_grad():
        want = raw_model(text_tokens)
    _close(impl.attn_only_forward(text_tokens, p, 2), want, "attn_only_forward on text vs the shipped model's logits", atol=1e-3)


@exercise("attn_only_forward")
def test_forward_matches_transformerlens_on_folded_and_random_models(impl, folded_run, random_ln_run):
    _close(impl.attn_only_forward(folded_run["tokens"], folded_run["params"], 2), folded_run["logits"],
           "attn_only_forward with the folded weights (nonzero b_U) vs TransformerLens", atol=1e-3)
    _close(impl.attn_only_forward(random_ln_run["tokens"], random_ln_run["params"], 2), random_ln_run["logits"],
           "attn_only_forward on a random model with non-trivial LayerNorm weights and biases vs TransformerLens", atol=1e-3)


@exercise("attn_only_forward")
def test_forward_passes_eps_to_every_layer_norm(impl, ref, random_ln_run):
    tokens, p = random_ln_run["tokens"], random_ln_run["params"]
    for eps in (0.3, 10.0):
        _close(impl.attn_only_forward(tokens, p, 2, eps), ref.attn_only_forward(tokens, p, 2, eps),
               f"attn_only_forward with eps = {eps} (the eps argument goes to every layer_norm)", atol=1e-3)


@exercise("attn_only_forward")
def test_forward_is_causal(impl, random_ln_run):
    tokens, p = random_ln_run["tokens"], random_ln_run["params"]
    a = _tensor(impl.attn_only_forward(tokens, p, 2), "attn_only_forward")
    t2 = tokens.clone()
    t2[:, -1] = (t2[:, -1] + 1) % 60
    b = _tensor(impl.attn_only_forward(t2, p, 2), "attn_only_forward")
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-5), "changing the last token changed the logits at earlier positions"


@exercise("per_token_loss")
def test_per_token_loss_matches_transformerlens(impl, raw_model, raw_run):
    with torch.no_grad():
        want = raw_model(raw_run["tokens"], return_type="loss", loss_per_token=True)
    _close(impl.per_token_loss(raw_run["logits"], raw_run["tokens"]), want,
           "per_token_loss vs TransformerLens's loss_per_token=True", atol=1e-4)


@exercise("per_token_loss")
def test_per_token_loss_matches_reference_on_random_logits(impl, ref, seed):
    logits, tokens = torch.randn(3, 6, 11) * 3, torch.randint(0, 11, (3, 6))
    _close(impl.per_token_loss(logits, tokens), ref.per_token_loss(logits, tokens), "per_token_loss on random logits")


@exercise("per_token_loss")
def test_per_token_loss_targets_the_next_token(impl, seed):
    tokens = torch.tensor([[1, 2, 3]])
    out = _tensor(impl.per_token_loss(torch.zeros(1, 3, 7), tokens), "per_token_loss")
    assert out.shape == (1, 2), f"per_token_loss should return [batch, pos - 1] = (1, 2); got {tuple(out.shape)}"
    assert torch.allclose(out, torch.full((1, 2), math.log(7))), "uniform logits over 7 tokens should give loss log 7"
    logits = torch.zeros(1, 3, 7)
    logits[0, 0, 2], logits[0, 1, 3] = 50.0, 50.0  # each position is sure of the token that comes next
    out = _tensor(impl.per_token_loss(logits, tokens), "per_token_loss")
    assert out.abs().max() < 1e-3, "confident correct predictions of the *next* token should have loss ~0"


# ------------------------------------------------------------------------------------------- Part 2
@exercise("diagonal_score")
def test_diagonal_score_matches_reference_on_random_patterns(impl, ref, seed):
    pattern = torch.randn(2, 3, 7, 7).softmax(-1)
    for offset in (-1, -3, 0):
        _close(impl.diagonal_score(pattern, offset), ref.diagonal_score(pattern, offset), f"diagonal_score at offset {offset}")


@exercise("diagonal_score")
def test_diagonal_score_on_shipped_model(impl, ref, raw_run):
    cache = raw_run["cache"]
    _close(impl.diagonal_score(cache["pattern", 0], -1), ref.diagonal_score(cache["pattern", 0], -1),
           "previous-token scores of layer 0 of the shipped model")
    _close(impl.diagonal_score(cache["pattern", 1], 1 - N_REP), ref.diagonal_score(cache["pattern", 1], 1 - N_REP),
           "induction scores of layer 1 of the shipped model")


@exercise("diagonal_score")
def test_diagonal_score_of_a_previous_token_head_is_one(impl, seed):
    prev = torch.diag(torch.ones(5), -1)
    prev[0, 0] = 1.0
    pattern = torch.stack([prev, torch.eye(6)])[None].repeat(4, 1, 1, 1)  # batch 4, heads 2
    out = _tensor(impl.diagonal_score(pattern, -1), "diagonal_score")
    assert out.shape == (2,), f"diagonal_score should return one score per head, shape (2,); got {tuple(out.shape)}"
    assert torch.allclose(out, torch.tensor([1.0, 0.0])), ("a head attending to the previous token should score 1 at "
                                                          "offset -1, a head attending to itself 0")


@exercise("direct_path_logits")
def test_direct_path_logits_match_reference_on_random_weights(impl, ref, seed):
    W_E, W_U = torch.randn(7, 5), torch.randn(5, 9)
    _close(impl.direct_path_logits(W_E, W_U), ref.direct_path_logits(W_E, W_U), "direct_path_logits on random weights")


@exercise("direct_path_logits")
def test_direct_path_logits_on_shipped_model(impl, folded_model):
    out = _tensor(impl.direct_path_logits(folded_model.W_E, folded_model.W_U), "direct_path_logits")
    assert out.shape == (1024, 1024), f"direct_path_logits should be [d_vocab, d_vocab_out]; got {tuple(out.shape)}"
    for t in (0, 17, 500):
        _close(out[t], folded_model.W_E[t] @ folded_model.W_U, f"row {t} of the direct path (token {t} -> next-token logits)", atol=1e-4)


@exercise("direct_path_logits")
def test_direct_path_logits_rows_are_current_tokens(impl, seed):
    W_E = torch.eye(3, 4)
    W_U = torch.randn(4, 6)
    out = _tensor(impl.direct_path_logits(W_E, W_U), "direct_path_logits")
    assert out.shape == (3, 6), f"rows are current tokens (3), columns next tokens (6); got shape {tuple(out.shape)}"
    assert torch.allclose(out, W_U[:3], atol=1e-6), "with W_E = identity rows, row t should be row t of W_U"


@exercise("bigram_counts")
def test_bigram_counts_match_reference_on_random_tokens(impl, ref, seed):
    tokens = torch.randint(0, 6, (5, 20))  # small vocabulary: many repeated pairs
    _close(impl.bigram_counts(tokens, 6), ref.bigram_counts(tokens, 6), "bigram_counts on random tokens (repeated pairs)")


@exercise("bigram_counts")
def test_bigram_counts_on_shipped_text(impl, ref, text_tokens):
    out = _tensor(impl.bigram_counts(text_tokens, 1024), "bigram_counts")
    _close(out, ref.bigram_counts(text_tokens, 1024), "bigram_counts on held-out text")


@exercise("bigram_counts")
def test_bigram_counts_stay_inside_rows(impl, seed):
    tokens = torch.tensor([[2, 2, 2], [1, 0, 2]])
    out = _tensor(impl.bigram_counts(tokens, 3), "bigram_counts")
    assert out.shape == (3, 3) and out.is_floating_point(), "bigram_counts should return a float [d_vocab, d_vocab] tensor"
    assert out.sum() == 4, f"2 rows of 3 tokens have 4 bigrams; your counts sum to {out.sum().item()}"
    assert out[2, 2] == 2 and out[2, 1] == 0, "2 -> 2 occurs twice; 2 -> 1 only across the row boundary, which does not count"


@exercise("residual_stack")
def test_residual_stack_matches_reference_on_random_inputs(impl, ref, seed):
    e, pe = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    z, W_O, b_O = torch.randn(2, 2, 4, 3, 5), torch.randn(2, 3, 5, 6), torch.randn(2, 6)
    _close(impl.residual_stack(e, pe, z, W_O, b_O), ref.residual_stack(e, pe, z, W_O, b_O),
           "residual_stack with 2 layers of 3 heads on random inputs")


@exercise("residual_stack")
def test_residual_stack_sums_to_final_residual_on_shipped_model(impl, folded_model, folded_run):
    cache = folded_run["cache"]
    z = torch.stack([cache["z", layer] for layer in range(2)])
    out = _tensor(impl.residual_stack(cache["embed"], cache["pos_embed"], z, folded_model.W_O, folded_model.b_O), "residual_stack")
    assert out.shape[0] == 11, f"2 + 2 * 4 + 1 = 11 components expected; got {out.shape[0]}"
    _close(out.sum(0), cache["resid_post", 1], "sum of residual_stack vs cache['resid_post', 1]", atol=1e-4)


@exercise("residual_stack")
def test_residual_stack_orders_heads_layer_by_layer(impl, seed):
    e, pe = torch.randn(1, 2, 6), torch.randn(1, 2, 6)
    z, W_O, b_O = torch.randn(2, 1, 2, 3, 5), torch.randn(2, 3, 5, 6), torch.randn(2, 6)
    out = _tensor(impl.residual_stack(e, pe, z, W_O, b_O), "residual_stack")
    assert out.shape == (9, 1, 2, 6), f"residual_stack should be [2 + 2 * 3 + 1, batch, pos, d_model]; got {tuple(out.shape)}"
    for layer, head in [(0, 2), (1, 0), (1, 2)]:
        assert torch.allclose(out[2 + layer * 3 + head], z[layer, :, :, head] @ W_O[layer, head], atol=1e-5), \
            f"component {2 + layer * 3 + head} should be L{layer}H{head}'s result (heads in layer-major order)"
    assert torch.allclose(out[-1], b_O.sum(0).expand(1, 2, 6)), "the last component should be the sum of all layers' b_O"


@exercise("logit_attribution")
def test_logit_attribution_matches_reference_on_random_inputs(impl, ref, seed):
    stack = torch.randn(4, 2, 5, 6) + torch.randn(4, 1, 1, 1)  # components not centred
    scale, W_U, tokens = torch.rand(2, 5, 1) + 0.5, torch.randn(6, 9), torch.randint(0, 9, (2, 5))
    _close(impl.logit_attribution(stack, scale, W_U, tokens), ref.logit_attribution(stack, scale, W_U, tokens),
           "logit_attribution on random components, scales and tokens", atol=1e-4)


@exercise("logit_attribution")
def test_logit_attribution_sums_to_correct_logits_on_shipped_model(impl, ref, folded_model, folded_run):
    cache, tokens, logits = folded_run["cache"], folded_run["tokens"], folded_run["logits"]
    z = torch.stack([cache["z", layer] for layer in range(2)])
    stack = ref.residual_stack(cache["embed"], cache["pos_embed"], z, folded_model.W_O, folded_model.b_O)
    out = _tensor(impl.logit_attribution(stack, cache["ln_final.hook_scale"], folded_model.W_U, tokens), "logit_attribution")
    want = logits[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0] - folded_model.b_U[tokens[:, 1:]]
    _close(out.sum(0), want, "sum over components vs the model's logit of the next token minus b_U", atol=1e-3)


@exercise("logit_attribution")
def test_logit_attribution_ignores_constant_shifts(impl, seed):
    stack, scale = torch.randn(3, 1, 4, 6), torch.rand(1, 4, 1) + 0.5
    W_U, tokens = torch.randn(6, 8), torch.randint(0, 8, (1, 4))
    a = _tensor(impl.logit_attribution(stack, scale, W_U, tokens), "logit_attribution")
    assert a.shape == (3, 1, 3), f"logit_attribution should return [component, batch, pos - 1]; got {tuple(a.shape)}"
    b = _tensor(impl.logit_attribution(stack + 5.0, scale, W_U, tokens), "logit_attribution")
    assert torch.allclose(a, b, atol=1e-4), "LayerNorm centres its input: adding a constant to every d_model entry of a component must not change its attribution"


@exercise("qk_circuit")
def test_qk_circuit_matches_reference_on_random_inputs(impl, ref, seed):
    X_q, X_k, W_Q, W_K = torch.randn(7, 10), torch.randn(4, 10), torch.randn(10, 3), torch.randn(10, 3)
    _close(_dense(impl.qk_circuit(X_q, X_k, W_Q, W_K), "qk_circuit"), ref.qk_circuit(X_q, X_k, W_Q, W_K).AB,
           "qk_circuit with 7 query rows and 4 key rows", atol=1e-4)


@exercise("qk_circuit")
def test_qk_circuit_matches_transformerlens_QK(impl, raw_model):
    eye = torch.eye(64)
    for layer in range(2):
        for head in range(4):
            got = _dense(impl.qk_circuit(eye, eye, raw_model.W_Q[layer, head], raw_model.W_K[layer, head]), "qk_circuit")
            _close(got, raw_model.QK[layer, head].AB.detach(), f"qk_circuit(I, I, ...) vs model.QK[{layer}, {head}]", atol=1e-4)


@exercise("qk_circuit")
def test_qk_circuit_gives_attention_scores_of_a_bias_free_head(impl, seed):
    x, W_Q, W_K = torch.randn(5, 8), torch.randn(8, 2), torch.randn(8, 2)
    got = _dense(impl.qk_circuit(x, x, W_Q, W_K), "qk_circuit")
    assert got.shape == (5, 5), f"qk_circuit should be [n_q, n_k] = (5, 5); got {tuple(got.shape)}"
    assert torch.allclose(got[3, 1], (x[3] @ W_Q) @ (x[1] @ W_K), atol=1e-4), \
        "entry [3, 1] should be the (unscaled) score of query row 3 against key row 1"
    assert torch.linalg.matrix_rank(got) <= 2, "a QK circuit has rank at most d_head"


@exercise("positional_attention")
def test_positional_attention_matches_reference_on_random_weights(impl, ref, seed):
    W_pos, W_Q, b_Q, W_K, b_K = torch.randn(10, 16), torch.randn(16, 4), torch.randn(4), torch.randn(16, 4), torch.randn(4)
    _close(impl.positional_attention(W_pos, W_Q, b_Q, W_K, b_K), ref.positional_attention(W_pos, W_Q, b_Q, W_K, b_K),
           "positional_attention on random weights", atol=1e-5)


@exercise("positional_attention")
def test_positional_attention_on_shipped_model(impl, ref, folded_model):
    m = folded_model
    for head in range(4):
        args = (m.W_pos[:40], m.W_Q[0, head], m.b_Q[0, head], m.W_K[0, head], m.b_K[0, head])
        _close(impl.positional_attention(*args), ref.positional_attention(*args),
               f"positional_attention of L0H{head} on the shipped model", atol=1e-5)


@exercise("positional_attention")
def test_positional_attention_is_causal_and_uniform_for_equal_positions(impl, seed):
    W_Q, b_Q, W_K, b_K = torch.randn(8, 2), torch.randn(2), torch.randn(8, 2), torch.randn(2)
    out = _tensor(impl.positional_attention(torch.randn(6, 8), W_Q, b_Q, W_K, b_K), "positional_attention")
    assert out.shape == (6, 6), f"positional_attention of 6 positions should be (6, 6); got {tuple(out.shape)}"
    assert out.triu(1).abs().max() < 1e-6 and torch.allclose(out.sum(-1), torch.ones(6), atol=1e-5), \
        "the pattern must be causal with rows summing to 1"
    same = torch.randn(1, 8).repeat(5, 1)
    _close(impl.positional_attention(same, W_Q, b_Q, W_K, b_K), torch.tril(torch.ones(5, 5)) / torch.arange(1, 6)[:, None],
           "identical positional embeddings should give uniform attention over the past")


@exercise("ov_circuit")
def test_ov_circuit_matches_reference_on_random_inputs(impl, ref, seed):
    W_E, W_V, W_O, W_U = torch.randn(7, 10), torch.randn(10, 3), torch.randn(3, 10), torch.randn(10, 5)
    _close(_dense(impl.ov_circuit(W_E, W_V, W_O, W_U), "ov_circuit"), ref.ov_circuit(W_E, W_V, W_O, W_U).AB,
           "ov_circuit with 7 source tokens and 5 output tokens", atol=1e-4)


@exercise("ov_circuit")
def test_ov_circuit_matches_transformerlens_OV(impl, raw_model):
    eye = torch.eye(64)
    for layer in range(2):
        for head in range(4):
            got = _dense(impl.ov_circuit(eye, raw_model.W_V[layer, head], raw_model.W_O[layer, head], eye), "ov_circuit")
            _close(got, raw_model.OV[layer, head].AB.detach(), f"ov_circuit(I, ..., I) vs model.OV[{layer}, {head}]", atol=1e-4)


@exercise("ov_circuit")
def test_ov_circuit_rows_are_source_tokens(impl, folded_model):
    m = folded_model
    got = _dense(impl.ov_circuit(m.W_E, m.W_V[1, 2], m.W_O[1, 2], m.W_U), "ov_circuit")
    assert got.shape == (1024, 1024), f"the full OV circuit should be [d_vocab, d_vocab]; got {tuple(got.shape)}"
    for t in (3, 700):
        _close(got[t], m.W_E[t] @ m.W_V[1, 2] @ m.W_O[1, 2] @ m.W_U, f"row {t}: what attending to token {t} does to the logits", atol=1e-4)


@exercise("top_ov_pairs")
def test_top_ov_pairs_match_reference_on_random_matrix(impl, ref, seed):
    ov = torch.randn(6, 9)
    got, want = impl.top_ov_pairs(ov, 5), ref.top_ov_pairs(ov, 5)
    assert len(got) == 3, "top_ov_pairs should return (src, out, values)"
    _close(torch.as_tensor(got[2]).float(), want[2], "the 5 largest values, largest first")
    assert torch.as_tensor(got[0]).tolist() == want[0].tolist(), "wrong source (row) indices on a 6 x 9 matrix"
    assert torch.as_tensor(got[1]).tolist() == want[1].tolist(), "wrong output (column) indices on a 6 x 9 matrix"


@exercise("top_ov_pairs")
def test_top_ov_pairs_on_shipped_model(impl, ref, folded_model):
    m = folded_model
    ov = (m.W_E @ m.W_V[1, 2] @ m.W_O[1, 2] @ m.W_U).detach()
    src, out, values = impl.top_ov_pairs(ov, 10)
    _close(torch.as_tensor(values).float(), ref.top_ov_pairs(ov, 10)[2], "top 10 values of an OV circuit of the shipped model", atol=1e-4)
    src, out = torch.as_tensor(src).long(), torch.as_tensor(out).long()
    _close(ov[src, out], torch.as_tensor(values).float(), "ov[src, out] should equal the values you return", atol=1e-4)


@exercise("top_ov_pairs")
def test_top_ov_pairs_search_the_whole_matrix(impl, seed):
    ov = torch.zeros(3, 8)
    ov[1, 2], ov[1, 7], ov[2, 0] = 5.0, 4.0, 3.0  # two of the top three in the same row
    src, out, values = impl.top_ov_pairs(ov, 3)
    got = (torch.as_tensor(src).tolist(), torch.as_tensor(out).tolist())
    assert got == ([1, 1, 2], [2, 7, 0]), \
        (f"on a 3 x 8 matrix whose top 3 entries are (1, 2), (1, 7), (2, 0) you returned sources {got[0]} and "
         f"destinations {got[1]}: search the whole matrix (two of them share a row) and turn each flat index into "
         f"(row, column) with the row length")


def _psd_circuit(gen, d_vocab=20, d_model=8, d_head=3):
    W_E, W_V, W_O = (torch.randn(d_vocab, d_model, generator=gen), torch.randn(d_model, d_head, generator=gen),
                     torch.randn(d_head, d_model, generator=gen))
    return W_E, W_V, W_O, torch.linalg.pinv(W_O) @ (W_E @ W_V).T


@exercise("copying_score")
def test_copying_score_matches_reference_on_random_weights(impl, ref, seed):
    for _ in range(3):
        W_E, W_V, W_O, W_U = torch.randn(15, 8), torch.randn(8, 4), torch.randn(4, 8), torch.randn(8, 15)
        got, want = _num(impl.copying_score(W_E, W_V, W_O, W_U), "copying_score"), ref.copying_score(W_E, W_V, W_O, W_U)
        assert abs(got - want) < 1e-3, f"copying_score on random weights: got {got:.4f}, expected {want:.4f}"


@exercise("copying_score")
def test_copying_score_on_shipped_model(impl, ref, folded_model):
    m = folded_model
    args = (m.W_E, m.W_V[0, 1], m.W_O[0, 1], m.W_U)
    got, want = _num(impl.copying_score(*args), "copying_score"), ref.copying_score(*args)
    assert abs(got - want) < 1e-3, f"copying_score of L0H1 of the shipped model: got {got:.4f}, expected {want:.4f}"


@exercise("copying_score")
def test_copying_score_is_plus_one_minus_one_and_uses_complex_modulus(impl, seed):
    gen = torch.Generator().manual_seed(3)
    W_E, W_V, W_O, W_U = _psd_circuit(gen)
    assert abs(_num(impl.copying_score(W_E, W_V, W_O, W_U), "copying_score") - 1) < 1e-3, "all-positive eigenvalues should score +1"
    assert abs(_num(impl.copying_score(W_E, W_V, W_O, -W_U), "copying_score") + 1) < 1e-3, "all-negative eigenvalues should score -1"
    rot = torch.tensor([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, -1.0]])  # eigenvalues 0.6 +- 0.8i, -1
    W_U_rot = torch.linalg.pinv(W_O) @ rot @ torch.linalg.pinv(W_E @ W_V)
    got = _num(impl.copying_score(W_E, W_V, W_O, W_U_rot), "copying_score")
    assert abs(got - 0.2 / 3) < 1e-3, (f"eigenvalues 0.6 + 0.8i, 0.6 - 0.8i, -1 should score (1.2 - 1) / (1 + 1 + 1) = 0.067; "
                                       f"got {got:.3f} (|λ| is the complex modulus)")


@exercise("composition_score")
def test_composition_score_matches_reference_on_random_matrices(impl, ref, seed):
    for _ in range(3):
        W_A, W_B = torch.randn(10, 3) @ torch.randn(3, 10), torch.randn(10, 3) @ torch.randn(3, 10)
        got, want = _num(impl.composition_score(W_A, W_B), "composition_score"), ref.composition_score(W_A, W_B)
        assert abs(got - want) < 1e-4, f"composition_score of random low-rank matrices: got {got:.4f}, expected {want:.4f}"


@exercise("composition_score")
def test_composition_score_on_shipped_heads(impl, ref, folded_model):
    m = folded_model
    W_A = (m.W_V[0, 2] @ m.W_O[0, 2]).detach()
    for head in range(4):
        W_B = (m.W_Q[1, head] @ m.W_K[1, head].T).T.detach()
        got, want = _num(impl.composition_score(W_A, W_B), "composition_score"), ref.composition_score(W_A, W_B)
        assert abs(got - want) < 1e-4, f"K-composition score L0H2 -> L1H{head}: got {got:.4f}, expected {want:.4f}"


@exercise("composition_score")
def test_composition_score_is_scale_free_and_ordered(impl, seed):
    W_A, W_B = torch.randn(6, 6), torch.randn(6, 6)
    a = _num(impl.composition_score(W_A, W_B), "composition_score")
    b = _num(impl.composition_score(3 * W_A, 0.5 * W_B), "composition_score")
    assert abs(a - b) < 1e-5, "composition_score must not change when W_A or W_B is rescaled"
    assert abs(_num(impl.composition_score(torch.eye(9), torch.eye(9)), "composition_score") - 1 / 3) < 1e-5, \
        "composition_score(I, I) of 9 x 9 identities should be 1/3 (Frobenius norms)"
    writes = torch.zeros(3, 3)
    writes[0, 2] = 1.0  # x @ W_A moves coordinate 0 to coordinate 2
    reads = torch.zeros(3, 3)
    reads[2, 1] = 1.0  # x @ W_B reads coordinate 2
    assert abs(_num(impl.composition_score(writes, reads), "composition_score") - 1) < 1e-5, \
        "W_B reads exactly what W_A writes: the score should be 1 (the product is W_A @ W_B)"


@exercise("composition_scores")
def test_composition_scores_match_transformerlens(impl, folded_model):
    m = folded_model
    out = impl.composition_scores(m.W_Q.detach(), m.W_K.detach(), m.W_V.detach(), m.W_O.detach())
    assert isinstance(out, dict) and set(out) >= {"Q", "K", "V"}, "composition_scores should return a dict with keys Q, K, V"
    for mode in "QKV":
        _close(torch.as_tensor(out[mode]), m.all_composition_scores(mode).scores[0, :, 1, :].detach(),
               f"{mode}-composition scores vs model.all_composition_scores('{mode}')", atol=1e-4)


@exercise("composition_scores")
def test_composition_scores_match_reference_on_random_weights(impl, ref, seed):
    W_Q, W_K, W_V = torch.randn(2, 3, 10, 4), torch.randn(2, 3, 10, 4), torch.randn(2, 3, 10, 4)
    W_O = torch.randn(2, 3, 4, 10)
    got, want = impl.composition_scores(W_Q, W_K, W_V, W_O), ref.composition_scores(W_Q, W_K, W_V, W_O)
    for mode in "QKV":
        _close(torch.as_tensor(got[mode]), want[mode], f"{mode}-composition scores on random weights (3 heads)", atol=1e-4)


@exercise("composition_scores")
def test_composition_scores_find_a_planted_k_composition(impl, seed):
    d, n_heads = 8, 2
    W_Q, W_K, W_V = torch.zeros(2, n_heads, d, 1), torch.zeros(2, n_heads, d, 1), torch.zeros(2, n_heads, d, 1)
    W_O = torch.zeros(2, n_heads, 1, d)
    W_V[0, 0, 0, 0], W_O[0, 0, 0, 1] = 1.0, 1.0  # L0H0 copies coordinate 0 into coordinate 1
    W_V[0, 1, 2, 0], W_O[0, 1, 0, 3] = 1.0, 1.0  # L0H1 writes coordinate 3
    W_Q[1, 1, 4, 0], W_K[1, 1, 1, 0] = 1.0, 1.0  # L1H1's keys read coordinate 1, its queries coordinate 4
    W_Q[1, 0, 5, 0], W_K[1, 0, 6, 0] = 1.0, 1.0  # L1H0 reads coordinates nobody writes
    W_V[1, :, 7, 0], W_O[1, :, 0, 7] = 1.0, 1.0
    out = impl.composition_scores(W_Q, W_K, W_V, W_O)
    k = torch.as_tensor(out["K"]).float()
    q = torch.as_tensor(out["Q"]).float()
    assert k.shape == (2, 2), f"scores should be [n_heads (layer 0), n_heads (layer 1)]; got {tuple(k.shape)}"
    assert abs(k[0, 1] - 1) < 1e-5 and k.sum() - k[0, 1] < 1e-5, \
        "L0H0 writes exactly what L1H1's keys read: K[0, 1] should be 1 and every other K entry 0 (rows = layer-0 writers)"
    assert q.abs().max() < 1e-5, "no layer-1 query reads what layer 0 writes: every Q score should be 0"


@exercise("random_composition_baseline")
def test_random_baseline_matches_reference(impl, ref, seed):
    got = _num(impl.random_composition_baseline(64, 16, 300), "random_composition_baseline")
    want = ref.random_composition_baseline(64, 16, 2000)
    assert abs(got - want) < 0.01, f"baseline for d_model 64, d_head 16: got {got:.3f}, expected about {want:.3f}"


@exercise("random_composition_baseline")
def test_random_baseline_in_a_small_space(impl, ref, seed):
    got = _num(impl.random_composition_baseline(8, 2, 400), "random_composition_baseline")
    want = ref.random_composition_baseline(8, 2, 4000)
    assert abs(got - want) < 0.03, f"baseline for d_model 8, d_head 2: got {got:.3f}, expected about {want:.3f}"


@exercise("random_composition_baseline")
def test_random_baseline_uses_low_rank_factors(impl, ref, seed):
    # with d_head 1 the matrices have rank 1 and the score is |cos| of two random directions: well below what
    # full-rank square matrices give (1 / sqrt(d_model)), so ignoring d_head shows here
    for d_model in (16, 4):
        got = _num(impl.random_composition_baseline(d_model, 1, 4000), "random_composition_baseline")
        want = ref.random_composition_baseline(d_model, 1, 16000)
        assert abs(got - want) < 0.02, (f"baseline for d_model {d_model}, d_head 1: got {got:.3f}, expected about {want:.3f} "
                                        f"(W_A and W_B are products of [d_model, d_head] and [d_head, d_model] matrices)")


@exercise("random_composition_baseline")
def test_random_baseline_is_stable_and_a_score(impl, seed):
    a = _num(impl.random_composition_baseline(32, 8, 300), "random_composition_baseline")
    b = _num(impl.random_composition_baseline(32, 8, 300), "random_composition_baseline")
    assert 0 < a < 1, f"a composition score lies in (0, 1); got {a:.3f}"
    assert abs(a - b) < 0.01, f"two calls gave {a:.3f} and {b:.3f}: average over the samples, drawing fresh matrices each call"
