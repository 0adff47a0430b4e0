"""Known-wrong variants of chapter 1's exercises: the mistakes learners really make. Each must fail at least
one hidden check (tests/ch01_framework/test_wrong_variants.py asserts it). They are self-contained: they do
not call the notebook's other functions."""

import torch

ATTN = ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")


# ------------------------------------------------------------------------------ shared correct pieces
def _ln(x, w, b, eps=1e-5):
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w + b


def _causal(q, k, scale=True, mask_diagonal=False):
    s = torch.einsum("bqhe,bkhe->bhqk", q, k) / (q.shape[-1] ** 0.5 if scale else 1.0)
    n_q, n_k = s.shape[-2:]
    future = torch.triu(torch.ones(n_q, n_k, dtype=torch.bool), diagonal=0 if mask_diagonal else 1)
    return s.masked_fill(future, float("-inf"))


def _attn(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O, use_b_O=True, reduce="sum", mask=True):
    q = torch.einsum("bpd,hde->bphe", x, W_Q) + b_Q
    k = torch.einsum("bpd,hde->bphe", x, W_K) + b_K
    v = torch.einsum("bpd,hde->bphe", x, W_V) + b_V
    s = _causal(q, k) if mask else torch.einsum("bqhe,bkhe->bhqk", q, k) / q.shape[-1] ** 0.5
    z = torch.einsum("bhqk,bkhe->bqhe", s.softmax(-1), v)
    res = torch.einsum("bphe,hed->bphd", z, W_O)
    out = res.sum(2) if reduce == "sum" else res.mean(2)
    return out + b_O if use_b_O else out


def _forward(tokens, params, n_layers, eps=1e-5, residual=True, final_ln=True, use_b_U=True):
    resid = params["embed.W_E"][tokens] + params["pos_embed.W_pos"][: tokens.shape[1]]
    for layer in range(n_layers):
        x = _ln(resid, params[f"blocks.{layer}.ln1.w"], params[f"blocks.{layer}.ln1.b"], eps)
        out = _attn(x, **{n: params[f"blocks.{layer}.attn.{n}"] for n in ATTN})
        resid = resid + out if residual else out
    if final_ln:
        resid = _ln(resid, params["ln_final.w"], params["ln_final.b"], eps)
    logits = resid @ params["unembed.W_U"]
    return logits + params["unembed.b_U"] if use_b_U else logits


def _ov_eigenvalues(W_E, W_V, W_O, W_U):
    return torch.linalg.eigvals(W_O @ W_U @ W_E @ W_V)


# ------------------------------------------------------------------------------------------- Part 1
def embed_transposed(W_E, tokens):
    return W_E.T[tokens]


def pos_embed_indexed_by_token(W_pos, tokens):
    return W_pos[tokens]


def pos_embed_without_batch(W_pos, tokens):
    return W_pos[: tokens.shape[1]]


def layer_norm_unbiased_variance(x, w, b, eps=1e-5):
    return (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + eps).sqrt() * w + b


def layer_norm_eps_outside_root(x, w, b, eps=1e-5):
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w + b


def layer_norm_ignoring_eps(x, w, b, eps=1e-5):
    return _ln(x, w, b)  # always the default eps, whatever the caller passes


def project_to_heads_without_bias(x, W, b):
    return torch.einsum("bpd,hde->bphe", x, W)


def attention_scores_unmasked(q, k):
    return torch.einsum("bqhe,bkhe->bhqk", q, k) / q.shape[-1] ** 0.5


def attention_scores_unscaled(q, k):
    return _causal(q, k, scale=False)


def attention_scores_masking_the_diagonal(q, k):
    return _causal(q, k, mask_diagonal=True)


def attention_scores_divided_by_d_head(q, k):
    return _causal(q, k, scale=False) / q.shape[-1]


def attention_pattern_over_queries(scores):
    return scores.softmax(dim=-2)


def attention_pattern_naive_exp(scores):
    e = scores.exp()
    return e / e.sum(-1, keepdim=True)


def attention_z_summing_over_queries(pattern, v):
    return torch.einsum("bhqk,bqhe->bkhe", pattern, v)


def head_results_by_matmul(z, W_O):
    return torch.matmul(z, W_O)


def attention_layer_without_b_O(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O):
    return _attn(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O, use_b_O=False)


def attention_layer_mean_over_heads(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O):
    return _attn(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O, reduce="mean")


def attention_layer_without_mask(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O):
    return _attn(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O, mask=False)


def attn_only_forward_without_residual(tokens, params, n_layers, eps=1e-5):
    return _forward(tokens, params, n_layers, eps, residual=False)


def attn_only_forward_without_final_ln(tokens, params, n_layers, eps=1e-5):
    return _forward(tokens, params, n_layers, eps, final_ln=False)


def attn_only_forward_without_b_U(tokens, params, n_layers, eps=1e-5):
    return _forward(tokens, params, n_layers, eps, use_b_U=False)


def attn_only_forward_ignoring_eps(tokens, params, n_layers, eps=1e-5):
    return _forward(tokens, params, n_layers)  # always LayerNorm's default eps, whatever the caller passes


def per_token_loss_current_token(logits, tokens):
    return -logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, :-1, None])[..., 0]


def per_token_loss_without_minus(logits, tokens):
    return logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]


# ------------------------------------------------------------------------------------------- Part 2
def diagonal_score_default_dims(pattern, offset):
    return pattern.diagonal(offset).mean(dim=(0, -1))


def diagonal_score_flipped_offset(pattern, offset):
    return pattern.diagonal(offset=-offset, dim1=-2, dim2=-1).mean(dim=(0, -1))


def direct_path_logits_transposed(W_E, W_U):
    return W_U.T @ W_E.T


def bigram_counts_without_accumulate(tokens, d_vocab):
    counts = torch.zeros(d_vocab, d_vocab)
    counts[tokens[:, :-1].reshape(-1), tokens[:, 1:].reshape(-1)] += 1
    return counts


def bigram_counts_across_rows(tokens, d_vocab):
    flat = tokens.reshape(-1)
    return torch.bincount(flat[:-1] * d_vocab + flat[1:], minlength=d_vocab * d_vocab).reshape(d_vocab, d_vocab).float()


def residual_stack_head_major(embed, pos_embed, z, W_O, b_O):
    n_layers, batch, pos, n_heads, _ = z.shape
    heads = torch.einsum("lbphe,lhed->hlbpd", z, W_O).reshape(n_layers * n_heads, batch, pos, -1)
    return torch.cat([embed[None], pos_embed[None], heads, b_O.sum(0).expand(batch, pos, -1)[None]])


def residual_stack_without_bias(embed, pos_embed, z, W_O, b_O):
    n_layers, batch, pos, n_heads, _ = z.shape
    heads = torch.einsum("lbphe,lhed->lhbpd", z, W_O).reshape(n_layers * n_heads, batch, pos, -1)
    return torch.cat([embed[None], pos_embed[None], heads])


def logit_attribution_uncentred(stack, ln_scale, W_U, tokens):
    return torch.einsum("cbpd,dbp->cbp", (stack / ln_scale)[:, :, :-1], W_U[:, tokens[:, 1:]])


def logit_attribution_current_token(stack, ln_scale, W_U, tokens):
    normed = (stack - stack.mean(-1, keepdim=True)) / ln_scale
    return torch.einsum("cbpd,dbp->cbp", normed[:, :, :-1], W_U[:, tokens[:, :-1]])


def logit_attribution_without_scale(stack, ln_scale, W_U, tokens):
    normed = stack - stack.mean(-1, keepdim=True)
    return torch.einsum("cbpd,dbp->cbp", normed[:, :, :-1], W_U[:, tokens[:, 1:]])


def qk_circuit_q_and_k_swapped(X_q, X_k, W_Q, W_K):
    from transformer_lens import FactoredMatrix

    return FactoredMatrix(X_q @ W_K, (X_k @ W_Q).T)


def _pos_pattern(x, W_Q, b_Q, W_K, b_K, scale=True):
    s = (x @ W_Q + b_Q) @ (x @ W_K + b_K).T / (W_Q.shape[-1] ** 0.5 if scale else 1.0)
    n = s.shape[0]
    return s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf")).softmax(-1)


def positional_attention_unnormalised(W_pos, W_Q, b_Q, W_K, b_K):
    return _pos_pattern(W_pos, W_Q, b_Q, W_K, b_K)


def positional_attention_without_biases(W_pos, W_Q, b_Q, W_K, b_K):
    return _pos_pattern(_ln(W_pos, 1.0, 0.0), W_Q, 0 * b_Q, W_K, 0 * b_K)


def positional_attention_unscaled(W_pos, W_Q, b_Q, W_K, b_K):
    return _pos_pattern(_ln(W_pos, 1.0, 0.0), W_Q, b_Q, W_K, b_K, scale=False)


def ov_circuit_transposed(W_E, W_V, W_O, W_U):
    from transformer_lens import FactoredMatrix

    return FactoredMatrix(W_U.T @ W_O.T, W_V.T @ W_E.T)


def top_ov_pairs_wrong_divisor(ov, k):
    values, flat = ov.flatten().topk(k)
    return flat // ov.shape[0], flat % ov.shape[0], values


def top_ov_pairs_one_per_row(ov, k):
    best, cols = ov.max(dim=-1)
    values, rows = best.topk(k)
    return rows, cols[rows], values


def copying_score_real_parts(W_E, W_V, W_O, W_U):
    lam = _ov_eigenvalues(W_E, W_V, W_O, W_U)
    return (lam.real.sum() / lam.real.abs().sum()).item()


def copying_score_singular_values(W_E, W_V, W_O, W_U):
    s = torch.linalg.svdvals(W_O @ W_U @ W_E @ W_V)
    return (s.sum() / s.abs().sum()).item()


def copying_score_without_embeddings(W_E, W_V, W_O, W_U):
    lam = torch.linalg.eigvals(W_O @ W_V)  # eigenvalues of W_V W_O alone, ignoring W_E and W_U
    return (lam.sum().real / lam.abs().sum()).item()


def composition_score_reversed(W_A, W_B):
    return ((W_B @ W_A).norm() / (W_A.norm() * W_B.norm())).item()


def composition_score_spectral(W_A, W_B):
    n = torch.linalg.matrix_norm
    return (n(W_A @ W_B, ord=2) / (n(W_A, ord=2) * n(W_B, ord=2))).item()


def _comp(W_A, W_B):
    return ((W_A @ W_B).norm() / (W_A.norm() * W_B.norm())).item()


def composition_scores_k_not_transposed(W_Q, W_K, W_V, W_O):
    n = W_Q.shape[1]
    out = {m: torch.zeros(n, n) for m in "QKV"}
    for i in range(n):
        W_A = W_V[0, i] @ W_O[0, i]
        for j in range(n):
            W_QK = W_Q[1, j] @ W_K[1, j].T
            out["Q"][i, j], out["K"][i, j] = _comp(W_A, W_QK), _comp(W_A, W_QK)
            out["V"][i, j] = _comp(W_A, W_V[1, j] @ W_O[1, j])
    return out


def composition_scores_rows_and_columns_swapped(W_Q, W_K, W_V, W_O):
    n = W_Q.shape[1]
    out = {m: torch.zeros(n, n) for m in "QKV"}
    for i in range(n):
        W_A = W_V[0, i] @ W_O[0, i]
        for j in range(n):
            W_QK = W_Q[1, j] @ W_K[1, j].T
            out["Q"][j, i], out["K"][j, i] = _comp(W_A, W_QK), _comp(W_A, W_QK.T)
            out["V"][j, i] = _comp(W_A, W_V[1, j] @ W_O[1, j])
    return out


def random_composition_baseline_uniform(d_model, d_head, n_samples=200):
    W_A = torch.rand(n_samples, d_model, d_head) @ torch.rand(n_samples, d_head, d_model)
    W_B = torch.rand(n_samples, d_model, d_head) @ torch.rand(n_samples, d_head, d_model)
    n = torch.linalg.matrix_norm
    return (n(W_A @ W_B) / (n(W_A) * n(W_B))).mean().item()


def random_composition_baseline_full_rank(d_model, d_head, n_samples=200):
    """Square Gaussian matrices instead of products of [d_model, d_head] and [d_head, d_model] factors: d_head
    is ignored. In d_model 64 it happens to give almost the same mean as rank 16 (both ~0.125)."""
    W_A, W_B = torch.randn(n_samples, d_model, d_model), torch.randn(n_samples, d_model, d_model)
    n = torch.linalg.matrix_norm
    return (n(W_A @ W_B) / (n(W_A) * n(W_B))).mean().item()


WRONG = {
    "embed": [embed_transposed],
    "pos_embed": [pos_embed_indexed_by_token, pos_embed_without_batch],
    "layer_norm": [layer_norm_unbiased_variance, layer_norm_eps_outside_root, layer_norm_ignoring_eps],
    "project_to_heads": [project_to_heads_without_bias],
    "attention_scores": [attention_scores_unmasked, attention_scores_unscaled, attention_scores_masking_the_diagonal,
                         attention_scores_divided_by_d_head],
    "attention_pattern": [attention_pattern_over_queries, attention_pattern_naive_exp],
    "attention_z": [attention_z_summing_over_queries],
    "head_results": [head_results_by_matmul],
    "attention_layer": [attention_layer_without_b_O, attention_layer_mean_over_heads, attention_layer_without_mask],
    "attn_only_forward": [attn_only_forward_without_residual, attn_only_forward_without_final_ln,
                          attn_only_forward_without_b_U, attn_only_forward_ignoring_eps],
    "per_token_loss": [per_token_loss_current_token, per_token_loss_without_minus],
    "diagonal_score": [diagonal_score_default_dims, diagonal_score_flipped_offset],
    "direct_path_logits": [direct_path_logits_transposed],
    "bigram_counts": [bigram_counts_without_accumulate, bigram_counts_across_rows],
    "residual_stack": [residual_stack_head_major, residual_stack_without_bias],
    "logit_attribution": [logit_attribution_uncentred, logit_attribution_current_token, logit_attribution_without_scale],
    "qk_circuit": [qk_circuit_q_and_k_swapped],
    "positional_attention": [positional_attention_unnormalised, positional_attention_without_biases,
                             positional_attention_unscaled],
    "ov_circuit": [ov_circuit_transposed],
    "top_ov_pairs": [top_ov_pairs_wrong_divisor, top_ov_pairs_one_per_row],
    "copying_score": [copying_score_real_parts, copying_score_singular_values, copying_score_without_embeddings],
    "composition_score": [composition_score_reversed, composition_score_spectral],
    "composition_scores": [composition_scores_k_not_transposed, composition_scores_rows_and_columns_swapped],
    "random_composition_baseline": [random_composition_baseline_uniform, random_composition_baseline_full_rank],
}
