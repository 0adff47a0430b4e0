"""Correct implementations written differently from the reference must pass both the visible checks (what the
learner sees) and every hidden check (the grade): an analytic gradient instead of autograd, tensor hooks
(`register_hook`) instead of TransformerLens's backward hooks, a large negative number instead of -inf in the causal
mask, queries done one row at a time, `torch.corrcoef`, `cross_entropy` for log-probabilities, hooks that return a
new tensor built with `torch.where`."""


import torch
import torch.nn.functional as F

from tests.ch06_attribution import test_hidden
from tests.harness import correct_alternatives_test


def _ld(logits, answer_ids, end_pos):
    rows = torch.arange(logits.shape[0])
    return (logits[rows, end_pos, answer_ids[:, 0]] - logits[rows, end_pos, answer_ids[:, 1]]).mean()


def toy_gradient(x, W, u):
    """Analytic: sigmoid'(x W) = s (1 - s), then the chain rule."""
    s = torch.sigmoid(x @ W)
    return (s * (1 - s) * u) @ W.T


def _tensor_hook_run(model, tokens, names, metric):
    acts, grads = {}, {}

    def keep(name):
        def hook(x, hook):
            acts[name] = x.detach().clone()
            x.register_hook(lambda g: grads.__setitem__(name, g.detach().clone()))
            return x
        return hook
    with torch.enable_grad():
        value = metric(model.run_with_hooks(tokens, fwd_hooks=[(n, keep(n)) for n in names]))
        value.backward()
    model.zero_grad(set_to_none=True)
    return value, acts, grads


def acts_and_grads(model, tokens, answer_ids, end_pos, clean_ld, corrupted_ld, names):
    """Tensor hooks registered in the forward hooks, instead of TransformerLens's backward hooks."""
    value, acts, grads = _tensor_hook_run(model, tokens, names,
                                          lambda logits: (_ld(logits, answer_ids, end_pos) - corrupted_ld) / (clean_ld - corrupted_ld))
    return value.item(), acts, grads


def qk_fix_keys(base, source, grads, n_layers, attn_scale):
    """-1e9 instead of -inf in the mask, torch.where to swap one key's column."""
    out = torch.zeros(n_layers, base["blocks.0.attn.hook_q"].shape[1], base["blocks.0.attn.hook_q"].shape[2])
    for layer in range(n_layers):
        p = f"blocks.{layer}.attn."
        q = base[p + "hook_q"]
        n_pos = q.shape[1]
        causal = torch.ones(n_pos, n_pos).tril().bool()
        old = torch.einsum("bqhd,bkhd->bhqk", q, base[p + "hook_k"]) / attn_scale
        new = torch.einsum("bqhd,bkhd->bhqk", q, source[p + "hook_k"]) / attn_scale
        for s in range(n_pos):
            column = torch.arange(n_pos) == s
            scores = torch.where(column, new, old)
            scores = torch.where(causal, scores, torch.tensor(-1e9))
            out[layer, s] = ((scores.softmax(-1) - base[p + "hook_pattern"]) * grads[p + "hook_pattern"]).sum((0, 2, 3))
    return out


def qk_fix_queries(base, source, grads, n_layers, attn_scale):
    """One query row at a time."""
    batch, n_pos, n_heads, _ = base["blocks.0.attn.hook_q"].shape
    out = torch.zeros(n_layers, n_pos, n_heads)
    for layer in range(n_layers):
        p = f"blocks.{layer}.attn."
        for t in range(n_pos):
            row = torch.einsum("bhd,bkhd->bhk", source[p + "hook_q"][:, t], base[p + "hook_k"][:, : t + 1]) / attn_scale
            delta = row.softmax(-1) - base[p + "hook_pattern"][:, :, t, : t + 1]
            out[layer, t] = (delta * grads[p + "hook_pattern"][:, :, t, : t + 1]).sum((0, 2))
    return out


def pearson_correlation(x, y):
    """torch.corrcoef."""
    return torch.corrcoef(torch.stack([x.flatten().double(), y.flatten().double()]))[0, 1].item()


def second_copy_logprob(logits, tokens, n):
    """Minus the per-token cross entropy."""
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(tokens.shape[0], -1)
    return -loss[:, n + 1:].mean()


def induction_head_attribution(model, clean_tokens, corrupted_tokens):
    """Tensor hooks for the gradients; the corrupted z from another hooked run."""
    n = (clean_tokens.shape[1] - 1) // 2
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    tokens = clean_tokens
    _, acts, grads = _tensor_hook_run(model, clean_tokens, names, lambda logits: second_copy_logprob(logits, tokens, n))
    store = {}
    with torch.no_grad():
        model.run_with_hooks(corrupted_tokens, fwd_hooks=[(nm, lambda x, hook, nm=nm: store.__setitem__(nm, x.clone()) or x)
                                                          for nm in names])
    return torch.stack([torch.einsum("bphd,bphd->h", store[nm] - acts[nm], grads[nm]) for nm in names])


def act_patch_heads_by_pos(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, act="z"):
    """Hooks that return a new tensor built with torch.where."""
    names = [f"blocks.{layer}.attn.hook_{act}" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean_tokens)
        clean, corrupted = _ld(clean_logits, answer_ids, end_pos), _ld(model(corrupted_tokens), answer_ids, end_pos)
        n_pos, n_heads = clean_tokens.shape[1], model.cfg.n_heads
        out = torch.zeros(model.cfg.n_layers, n_pos, n_heads)
        for layer, name in enumerate(names):
            for pos in range(n_pos):
                for head in range(n_heads):
                    mask = torch.zeros(1, n_pos, n_heads, 1, dtype=torch.bool)
                    mask[0, pos, head] = True
                    logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[
                        (name, lambda x, hook, name=name, mask=mask: torch.where(mask, cache[name], x))])
                    out[layer, pos, head] = (_ld(logits, answer_ids, end_pos) - corrupted) / (clean - corrupted)
    return out


CASES = [("toy_gradient", toy_gradient), ("acts_and_grads", acts_and_grads), ("qk_fix_keys", qk_fix_keys),
         ("qk_fix_queries", qk_fix_queries), ("pearson_correlation", pearson_correlation),
         ("second_copy_logprob", second_copy_logprob), ("induction_head_attribution", induction_head_attribution),
         ("act_patch_heads_by_pos", act_patch_heads_by_pos)]


test_correct_alternatives_pass_visible_and_hidden_checks = correct_alternatives_test(CASES, test_hidden)
