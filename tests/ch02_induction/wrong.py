"""Known-wrong variants of chapter 2's exercises: the mistakes learners really make. Each must fail at least
one hidden check (tests/ch02_induction/test_wrong_variants.py asserts it). Variants for exercises that build on
earlier ones call self-contained correct pieces defined here, never the notebook's functions."""

import torch
from transformer_lens import FactoredMatrix


# ------------------------------------------------------------------------------ shared correct pieces
def _repeated(n_batch, n, d_vocab, bos, gen):
    r = torch.randint(0, d_vocab - 1, (n_batch, n), generator=gen)
    return r + (r >= bos).long()


def _prev(p):
    return p.diagonal(-1, -2, -1).mean((0, -1))


def _cur(p):
    return p.diagonal(0, -2, -1)[..., 1:].mean((0, -1))


def _first(p):
    return p[..., 1:, 0].mean((0, -1))


def _ind(p, n):
    return p.diagonal(1 - n, -2, -1)[..., 2:].mean((0, -1))


def _copies(loss, n):
    return torch.stack([loss[:, 1:n].mean(), loss[:, n + 1:].mean()])


def _patterns(model, tokens):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    return [cache["pattern", layer] for layer in range(model.cfg.n_layers)]


def _table(model, tokens):
    n = (tokens.shape[1] - 1) // 2
    return torch.stack([torch.stack([_prev(p), _cur(p), _first(p), _ind(p, n)]) for p in _patterns(model, tokens)], dim=1)


def _zero(z, head):
    z = z.clone()
    z[:, :, head] = 0.0
    return z


def _scores_with_hooks(model, tokens, extra_hooks=(), layers=None):
    n = (tokens.shape[1] - 1) // 2
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)

    def hook(x, hook):
        if layers is None or hook.layer() in layers:
            scores[hook.layer()] = _ind(x.detach(), n)

    with torch.no_grad():
        model.run_with_hooks(tokens, return_type=None, fwd_hooks=list(extra_hooks) + [(lambda nm: nm.endswith("hook_pattern"), hook)])
    return scores


# ------------------------------------------------------------------------------------------- Part 1
def generate_repeated_tokens_assuming_bos_is_zero(n_batch, n, d_vocab, bos, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(1, d_vocab, (n_batch, n), generator=gen)
    return torch.cat([torch.full((n_batch, 1), bos), r, r], dim=1)


def generate_repeated_tokens_including_bos(n_batch, n, d_vocab, bos, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(0, d_vocab, (n_batch, n), generator=gen)
    return torch.cat([torch.full((n_batch, 1), bos), r, r], dim=1)


def generate_repeated_tokens_with_fresh_second_copy(n_batch, n, d_vocab, bos, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([torch.full((n_batch, 1), bos), _repeated(n_batch, n, d_vocab, bos, gen),
                      _repeated(n_batch, n, d_vocab, bos, gen)], dim=1)


def generate_repeated_tokens_without_bos(n_batch, n, d_vocab, bos, seed=0):
    r = _repeated(n_batch, n, d_vocab, bos, torch.Generator().manual_seed(seed))
    return torch.cat([r, r], dim=1)


def generate_repeated_tokens_same_row_repeated(n_batch, n, d_vocab, bos, seed=0):
    r = _repeated(1, n, d_vocab, bos, torch.Generator().manual_seed(seed)).expand(n_batch, n)
    return torch.cat([torch.full((n_batch, 1), bos), r, r], dim=1)


def generate_repeated_tokens_ignoring_seed(n_batch, n, d_vocab, bos, seed=0):
    r = torch.randint(0, d_vocab - 1, (n_batch, n))
    r = r + (r >= bos).long()
    return torch.cat([torch.full((n_batch, 1), bos), r, r], dim=1)


def loss_on_each_copy_including_first_tokens(loss_per_token, n):
    return torch.stack([loss_per_token[:, :n].mean(), loss_per_token[:, n:].mean()])


def loss_on_each_copy_off_by_one(loss_per_token, n):
    return torch.stack([loss_per_token[:, 2:n + 1].mean(), loss_per_token[:, n + 2:].mean()])


def in_context_learning_score_early_minus_late(loss_per_token, early, late):
    return (loss_per_token[:, early[0]:early[1]].mean() - loss_per_token[:, late[0]:late[1]].mean()).item()


def in_context_learning_score_first_index_only(loss_per_token, early, late):
    return (loss_per_token[:, late[0]].mean() - loss_per_token[:, early[0]].mean()).item()


def in_context_learning_score_stop_included(loss_per_token, early, late):
    return (loss_per_token[:, late[0]:late[1] + 1].mean() - loss_per_token[:, early[0]:early[1] + 1].mean()).item()


# ------------------------------------------------------------------------------------------- Part 2
def previous_token_score_next_token(pattern):
    return pattern.diagonal(1, -2, -1).mean((0, -1))


def previous_token_score_diagonal_of_batch_and_heads(pattern):
    return pattern.diagonal(-1).mean((0, 1))  # diagonal of the first two axes: [q, k, diag]


def current_token_score_including_query_zero(pattern):
    return pattern.diagonal(0, -2, -1).mean((0, -1))


def first_token_score_including_query_zero(pattern):
    return pattern[..., 0].mean((0, -1))


def induction_score_duplicate_token_offset(pattern, n):
    return pattern.diagonal(-n, -2, -1)[..., 1:].mean((0, -1))


def induction_score_whole_diagonal(pattern, n):
    return pattern.diagonal(1 - n, -2, -1).mean((0, -1))


def head_score_table_layers_first(model, tokens):
    return _table(model, tokens).transpose(0, 1)


def head_score_table_induction_first(model, tokens):
    return _table(model, tokens)[[3, 0, 1, 2]]


def head_score_table_fixed_n(model, tokens):
    n = 12
    return torch.stack([torch.stack([_prev(p), _cur(p), _first(p), _ind(p, n)]) for p in _patterns(model, tokens)], dim=1)


HEAD_KINDS = ("previous-token", "current-token", "first-token", "induction")


def label_heads_first_kind_above_threshold(table, threshold=0.4):
    labels = []
    for layer in range(table.shape[1]):
        row = []
        for head in range(table.shape[2]):
            above = [k for k in range(4) if table[k, layer, head] >= threshold]
            row.append(HEAD_KINDS[above[0]] if above else "none")
        labels.append(row)
    return labels


def label_heads_without_threshold(table, threshold=0.4):
    kind = table.argmax(0)
    return [[HEAD_KINDS[int(kind[layer, head])] for head in range(table.shape[2])] for layer in range(table.shape[1])]


def label_heads_strictly_above(table, threshold=0.4):
    best, kind = table.max(0)
    return [[HEAD_KINDS[int(kind[layer, head])] if best[layer, head] > threshold else "none"
             for head in range(table.shape[2])] for layer in range(table.shape[1])]


# ------------------------------------------------------------------------------------------- Part 3
def induction_scores_with_hooks_duplicate_token_offset(model, tokens):
    n = (tokens.shape[1] - 1) // 2
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)

    def hook(pattern, hook):
        scores[hook.layer()] = pattern.diagonal(-n, -2, -1)[..., 1:].mean((0, -1))

    with torch.no_grad():
        model.run_with_hooks(tokens, return_type=None, fwd_hooks=[(lambda nm: nm.endswith("hook_pattern"), hook)])
    return scores


def induction_scores_with_hooks_only_last_layer(model, tokens):
    return _scores_with_hooks(model, tokens, layers={model.cfg.n_layers - 1})


def zero_ablate_head_z_wrong_axis(z, head):
    z = z.clone()
    z[:, head] = 0.0
    return z


def zero_ablate_head_z_keeping_only_head(z, head):
    out = torch.zeros_like(z)
    out[:, :, head] = z[:, :, head]
    return out


def zero_ablate_head_z_in_place(z, head):
    z[:, :, head] = 0.0
    return z


def mean_ablate_head_z_in_place(z, head, z_mean):
    z[:, :, head] = z_mean[:, head]
    return z


def mean_ablate_head_z_in_place_without_grad(z, head, z_mean):
    with torch.no_grad():
        z[:, :, head] = z_mean[:, head]
    return z


def mean_ablate_head_z_mean_over_positions(z, head, z_mean):
    z = z.clone()
    z[:, :, head] = z_mean[:, head].mean(0)
    return z


def mean_ablate_head_z_using_own_batch(z, head, z_mean):
    z = z.clone()
    z[:, :, head] = z[:, :, head].mean(0)
    return z


def _ablated(model, tokens, layer, head, mode, mean_fn=None, hook_layer=None):
    n = (tokens.shape[1] - 1) // 2
    name = f"blocks.{layer if hook_layer is None else hook_layer}.attn.hook_z"
    if mode == "mean":
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=name)
        z_mean = mean_fn(cache[name]) if mean_fn else cache[name].mean(0)

        def hook_fn(z, hook):
            z = z.clone()
            z[:, :, head] = z_mean[..., head, :] if z_mean.ndim == 3 else z_mean[head]
            return z
    else:
        hook_fn = lambda z, hook: _zero(z, head)
    with torch.no_grad():
        loss = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=[(name, hook_fn)])
    return _copies(loss, n)


def ablated_copy_losses_always_layer_0(model, tokens, layer, head, mode="zero"):
    return _ablated(model, tokens, layer, head, mode, hook_layer=0)


def ablated_copy_losses_mean_over_batch_and_positions(model, tokens, layer, head, mode="zero"):
    return _ablated(model, tokens, layer, head, mode, mean_fn=lambda z: z.mean((0, 1)))


def ablated_copy_losses_zero_whatever_the_mode(model, tokens, layer, head, mode="zero"):
    return _ablated(model, tokens, layer, head, "zero")


def _dla(z, W_O, W_U, ln_scale, tokens, n, target_shift=1, use_scale=True, positions=None):
    results = torch.einsum("lbphe,lhed->lbphd", z, W_O)
    if use_scale:
        results = results / ln_scale[None, :, :, :, None]
    targets = tokens[:, 1:] if target_shift == 1 else tokens[:, :-1]
    attribution = torch.einsum("lbphd,dbp->lbph", results[:, :, :-1], W_U[:, targets])
    return attribution[:, :, positions if positions is not None else slice(n + 1, None)].mean((1, 2))


def head_logit_attribution_current_token(z, W_O, W_U, ln_scale, tokens, n):
    return _dla(z, W_O, W_U, ln_scale, tokens, n, target_shift=0)


def head_logit_attribution_without_ln_scale(z, W_O, W_U, ln_scale, tokens, n):
    return _dla(z, W_O, W_U, ln_scale, tokens, n, use_scale=False)


def head_logit_attribution_whole_second_half(z, W_O, W_U, ln_scale, tokens, n):
    return _dla(z, W_O, W_U, ln_scale, tokens, n, positions=slice(n, None))


# ------------------------------------------------------------------------------------------- Part 4
def diagonal_argmax_fraction_over_columns(M):
    return (M.argmax(0) == torch.arange(M.shape[0])).float().mean().item()


def diagonal_argmax_fraction_count(M):
    return (M.argmax(-1) == torch.arange(M.shape[0])).sum().item()


def ov_copy_fractions_argmax_over_sources(W_E, W_V, W_O, W_U):
    n_layers, n_heads = W_V.shape[:2]
    out = torch.zeros(n_layers, n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):
            full = W_E @ W_V[layer, head] @ W_O[layer, head] @ W_U
            out[layer, head] = (full.argmax(0) == torch.arange(full.shape[0])).float().mean()
    return out


def _positional(W_pos, W_Q, b_Q, W_K, b_K, normalise=True, scale=True, mask=True):
    x = W_pos
    if normalise:
        x = x - x.mean(-1, keepdim=True)
        x = x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
    q = torch.einsum("pd,hde->hpe", x, W_Q) + b_Q[:, None]
    k = torch.einsum("pd,hde->hpe", x, W_K) + b_K[:, None]
    scores = torch.einsum("hqe,hke->hqk", q, k) / (W_Q.shape[-1] ** 0.5 if scale else 1.0)
    if mask:
        n = W_pos.shape[0]
        scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    return scores.softmax(-1)


def positional_patterns_without_normalisation(W_pos, W_Q, b_Q, W_K, b_K):
    return _positional(W_pos, W_Q, b_Q, W_K, b_K, normalise=False)


def positional_patterns_without_scale(W_pos, W_Q, b_Q, W_K, b_K):
    return _positional(W_pos, W_Q, b_Q, W_K, b_K, scale=False)


def positional_patterns_without_mask(W_pos, W_Q, b_Q, W_K, b_K):
    return _positional(W_pos, W_Q, b_Q, W_K, b_K, mask=False)


def k_composition_circuit_q_composition(W_E, W_V0, W_O0, W_Q1, W_K1):
    return FactoredMatrix(W_E @ W_V0 @ W_O0 @ W_Q1, (W_E @ W_K1).T)


def k_composition_circuit_without_previous_token_head(W_E, W_V0, W_O0, W_Q1, W_K1):
    return FactoredMatrix(W_E @ W_Q1, (W_E @ W_K1).T)


def k_composition_circuit_transposed(W_E, W_V0, W_O0, W_Q1, W_K1):
    return FactoredMatrix(W_E @ W_V0 @ W_O0 @ W_K1, (W_E @ W_Q1).T)


def pairwise_composition_scores_reader_first(W_A, W_B):
    products = torch.einsum("bij,ajk->abik", W_B, W_A)
    return torch.linalg.matrix_norm(products) / (torch.linalg.matrix_norm(W_A)[:, None] * torch.linalg.matrix_norm(W_B)[None])


def pairwise_composition_scores_squared_norms(W_A, W_B):
    products = torch.einsum("aij,bjk->abik", W_A, W_B)
    squared = torch.linalg.matrix_norm(products) ** 2
    return squared / (torch.linalg.matrix_norm(W_A)[:, None] ** 2 * torch.linalg.matrix_norm(W_B)[None] ** 2)


def random_composition_scores_uniform(d_model, d_head, n_samples=1000):
    def low_rank():
        return torch.rand(n_samples, d_model, d_head) @ torch.rand(n_samples, d_head, d_model)

    A, B = low_rank(), low_rank()
    return torch.linalg.matrix_norm(A @ B) / (torch.linalg.matrix_norm(A) * torch.linalg.matrix_norm(B))


def random_composition_scores_full_rank(d_model, d_head, n_samples=1000):
    A, B = torch.randn(n_samples, d_model, d_model), torch.randn(n_samples, d_model, d_model)  # d_head ignored
    return torch.linalg.matrix_norm(A @ B) / (torch.linalg.matrix_norm(A) * torch.linalg.matrix_norm(B))


def random_composition_scores_one_pair_repeated(d_model, d_head, n_samples=1000):
    A = torch.randn(d_model, d_head) @ torch.randn(d_head, d_model)
    B = torch.randn(d_model, d_head) @ torch.randn(d_head, d_model)
    return ((A @ B).norm() / (A.norm() * B.norm())).expand(n_samples).clone()


def induction_scores_after_ablation_without_ablating(model, tokens, layer, head):
    return _scores_with_hooks(model, tokens)


def induction_scores_after_ablation_always_layer_0(model, tokens, layer, head):
    return _scores_with_hooks(model, tokens, extra_hooks=[("blocks.0.attn.hook_z", lambda z, hook: _zero(z, head))])


# ------------------------------------------------------------------------------------------- Part 5
def _induction_batch(n_batch, seq_len, transitions, min_len, max_len, seed, fixed_start=False, fixed_length=False,
                     mask_from=1, tile=True, span_from_text=False, last_start=0, span_low=1):
    gen = torch.Generator().manual_seed(seed)
    d_vocab = transitions.shape[0]
    tokens = torch.zeros(n_batch, seq_len, dtype=torch.long)
    for p in range(1, seq_len):
        tokens[:, p] = torch.multinomial(transitions[tokens[:, p - 1]], 1, generator=gen)[:, 0]
    is_repeat = torch.zeros(n_batch, seq_len, dtype=torch.bool)
    for b in range(n_batch):
        length = max_len if fixed_length else int(torch.randint(min_len, max_len + 1, (1,), generator=gen))
        start = 1 if fixed_start else int(torch.randint(1, seq_len - 2 * length + 1 - last_start, (1,), generator=gen))
        span = (tokens[b, start:start + length].clone() if span_from_text
                else torch.randint(span_low, d_vocab, (length,), generator=gen))
        if tile:
            rest = seq_len - start
            tokens[b, start:] = span.repeat(rest // length + 1)[:rest]
        else:
            tokens[b, start + length:start + 2 * length] = span
        is_repeat[b, start + length + mask_from:] = True
    return tokens, is_repeat


def make_induction_batch_fixed_start(n_batch, seq_len, transitions, min_len, max_len, seed=0):
    return _induction_batch(n_batch, seq_len, transitions, min_len, max_len, seed, fixed_start=True)


def make_induction_batch_fixed_length(n_batch, seq_len, transitions, min_len, max_len, seed=0):
    return _induction_batch(n_batch, seq_len, transitions, min_len, max_len, seed, fixed_length=True)


def make_induction_batch_repeat_mask_one_early(n_batch, seq_len, transitions, min_len, max_len, seed=0):
    return _induction_batch(n_batch, seq_len, transitions, min_len, max_len, seed, mask_from=0)


def make_induction_batch_span_from_the_chain(n_batch, seq_len, transitions, min_len, max_len, seed=0):
    return _induction_batch(n_batch, seq_len, transitions, min_len, max_len, seed, span_from_text=True)


def make_induction_batch_start_never_at_the_end(n_batch, seq_len, transitions, min_len, max_len, seed=0):
    return _induction_batch(n_batch, seq_len, transitions, min_len, max_len, seed, last_start=1)  # 1 .. seq_len - 2L - 1


def make_induction_batch_span_may_hold_bos(n_batch, seq_len, transitions, min_len, max_len, seed=0):
    return _induction_batch(n_batch, seq_len, transitions, min_len, max_len, seed, span_low=0)


def make_induction_batch_two_copies_only(n_batch, seq_len, transitions, min_len, max_len, seed=0):
    return _induction_batch(n_batch, seq_len, transitions, min_len, max_len, seed, tile=False)


def _probe(model, probe_tokens, prev_layer=0, ind_layer=-1, reduce="max"):
    n = (probe_tokens.shape[1] - 1) // 2
    table = _table(model, probe_tokens)
    with torch.no_grad():
        losses = _copies(model(probe_tokens, return_type="loss", loss_per_token=True), n)
    agg = (lambda t: t.max()) if reduce == "max" else (lambda t: t.mean())
    return {"prev_token": float(agg(table[0, prev_layer])), "induction": float(agg(table[3, ind_layer])),
            "first_copy_loss": float(losses[0]), "second_copy_loss": float(losses[1])}


def training_probe_induction_from_first_layer(model, probe_tokens):
    return _probe(model, probe_tokens, ind_layer=0)


def training_probe_mean_over_heads(model, probe_tokens):
    return _probe(model, probe_tokens, reduce="mean")


def training_probe_previous_token_from_last_layer(model, probe_tokens):
    return _probe(model, probe_tokens, prev_layer=-1)


def phase_change_step_returns_index(steps, scores, threshold=0.4):
    for i, score in enumerate(scores):
        if score >= threshold:
            return i
    return -1


def phase_change_step_strict(steps, scores, threshold=0.4):
    for step, score in zip(steps, scores):
        if score > threshold:
            return int(step)
    return -1


def phase_change_step_last_crossing(steps, scores, threshold=0.4):
    found = -1
    for step, score in zip(steps, scores):
        if score >= threshold:
            found = int(step)
    return found


WRONG = {
    "generate_repeated_tokens": [generate_repeated_tokens_assuming_bos_is_zero, generate_repeated_tokens_including_bos,
                                 generate_repeated_tokens_with_fresh_second_copy, generate_repeated_tokens_without_bos,
                                 generate_repeated_tokens_ignoring_seed, generate_repeated_tokens_same_row_repeated],
    "loss_on_each_copy": [loss_on_each_copy_including_first_tokens, loss_on_each_copy_off_by_one],
    "in_context_learning_score": [in_context_learning_score_early_minus_late, in_context_learning_score_first_index_only,
                                  in_context_learning_score_stop_included],
    "previous_token_score": [previous_token_score_next_token, previous_token_score_diagonal_of_batch_and_heads],
    "current_token_score": [current_token_score_including_query_zero],
    "first_token_score": [first_token_score_including_query_zero],
    "induction_score": [induction_score_duplicate_token_offset, induction_score_whole_diagonal],
    "head_score_table": [head_score_table_layers_first, head_score_table_induction_first, head_score_table_fixed_n],
    "label_heads": [label_heads_first_kind_above_threshold, label_heads_without_threshold, label_heads_strictly_above],
    "induction_scores_with_hooks": [induction_scores_with_hooks_duplicate_token_offset, induction_scores_with_hooks_only_last_layer],
    "zero_ablate_head_z": [zero_ablate_head_z_wrong_axis, zero_ablate_head_z_keeping_only_head, zero_ablate_head_z_in_place],
    "mean_ablate_head_z": [mean_ablate_head_z_mean_over_positions, mean_ablate_head_z_using_own_batch,
                           mean_ablate_head_z_in_place, mean_ablate_head_z_in_place_without_grad],
    "ablated_copy_losses": [ablated_copy_losses_always_layer_0, ablated_copy_losses_mean_over_batch_and_positions,
                            ablated_copy_losses_zero_whatever_the_mode],
    "head_logit_attribution": [head_logit_attribution_current_token, head_logit_attribution_without_ln_scale,
                               head_logit_attribution_whole_second_half],
    "diagonal_argmax_fraction": [diagonal_argmax_fraction_over_columns, diagonal_argmax_fraction_count],
    "ov_copy_fractions": [ov_copy_fractions_argmax_over_sources],
    "positional_patterns": [positional_patterns_without_normalisation, positional_patterns_without_scale,
                            positional_patterns_without_mask],
    "k_composition_circuit": [k_composition_circuit_q_composition, k_composition_circuit_without_previous_token_head,
                              k_composition_circuit_transposed],
    "pairwise_composition_scores": [pairwise_composition_scores_reader_first, pairwise_composition_scores_squared_norms],
    "random_composition_scores": [random_composition_scores_uniform, random_composition_scores_one_pair_repeated,
                                  random_composition_scores_full_rank],
    "induction_scores_after_ablation": [induction_scores_after_ablation_without_ablating,
                                        induction_scores_after_ablation_always_layer_0],
    "make_induction_batch": [make_induction_batch_fixed_start, make_induction_batch_fixed_length,
                             make_induction_batch_repeat_mask_one_early, make_induction_batch_span_from_the_chain,
                             make_induction_batch_two_copies_only, make_induction_batch_start_never_at_the_end,
                             make_induction_batch_span_may_hold_bos],
    "training_probe": [training_probe_induction_from_first_layer, training_probe_mean_over_heads,
                       training_probe_previous_token_from_last_layer],
    "phase_change_step": [phase_change_step_returns_index, phase_change_step_strict, phase_change_step_last_crossing],
}
