"""Known-wrong variants of chapter 6's exercises: mistakes learners make. Each must fail a hidden check."""
import torch

from tests.harness import load_impl

_ref = None


def ref():
    global _ref
    if _ref is None:
        _ref = load_impl("06_attribution", "solutions")
    return _ref


def _ld(logits, answer_ids, end_pos):
    return ref().mean_logit_diff(logits, answer_ids, end_pos)


# ------------------------------------------------------------------------------------------- Part 1
def toy_network_tanh(x, W, u):
    return torch.tanh(x @ W) @ u


def toy_network_no_nonlinearity(x, W, u):
    return (x @ W) @ u


def toy_gradient_of_the_mean(x, W, u):
    return ref().toy_gradient(x, W, u) / x.shape[0]


def toy_gradient_linear_part_only(x, W, u):
    return (W @ u).expand(x.shape[0], -1) / 4


def linear_estimate_wrong_sign(a, b, grad_a):
    return ((a - b) * grad_a).sum(-1)


def linear_estimate_gradient_dot_b(a, b, grad_a):
    return (b * grad_a).sum(-1)


def relative_error_without_abs(estimate, exact):
    return ((estimate - exact).sum().abs() / exact.abs().sum()).item()


def relative_error_over_estimate(estimate, exact):
    return ((estimate - exact).abs().sum() / estimate.abs().sum()).item()


# ------------------------------------------------------------------------------------------- Part 2
def mean_logit_diff_last_position(logits, answer_ids, end_pos):
    end_logits = logits[:, -1]
    a = end_logits.gather(1, answer_ids)
    return (a[:, 0] - a[:, 1]).mean()


def mean_logit_diff_with_item(logits, answer_ids, end_pos):
    end_logits = logits[torch.arange(logits.shape[0]), end_pos]
    a = end_logits.gather(1, answer_ids)
    return torch.tensor((a[:, 0] - a[:, 1]).mean().item())


def normalised_metric_swapped(ld, clean_ld, corrupted_ld):
    return (ld - clean_ld) / (corrupted_ld - clean_ld)


def normalised_metric_unnormalised(ld, clean_ld, corrupted_ld):
    return ld - corrupted_ld


def acts_and_grads_raw_logit_diff(model, tokens, answer_ids, end_pos, clean_ld, corrupted_ld, names):
    acts, grads = {}, {}
    fwd = [(n, lambda x, hook, n=n: acts.__setitem__(n, x.detach().clone()) or x) for n in names]
    bwd = [(n, lambda g, hook, n=n: grads.__setitem__(n, g.detach().clone())) for n in names]
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        value = _ld(model(tokens), answer_ids, end_pos)
        value.backward()
    model.zero_grad(set_to_none=True)
    return value.item(), acts, grads


def acts_and_grads_keyed_by_hook_name(model, tokens, answer_ids, end_pos, clean_ld, corrupted_ld, names):
    acts, grads = {}, {}
    fwd = [(n, lambda x, hook: acts.__setitem__(hook.name, x.detach().clone()) or x) for n in names]
    bwd = [(n, lambda g, hook: grads.__setitem__(hook.name, g.detach().clone())) for n in names]
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        value = ref().normalised_metric(_ld(model(tokens), answer_ids, end_pos), clean_ld, corrupted_ld)
        value.backward()
    model.zero_grad(set_to_none=True)
    return value.item(), acts, grads


# ------------------------------------------------------------------------------------------- Part 3
def attr_resid_mean_over_batch(base, source, grads, n_layers):
    return ref().attr_resid(base, source, grads, n_layers) / next(iter(base.values())).shape[0]


def attr_resid_base_minus_source(base, source, grads, n_layers):
    return ref().attr_resid(source, base, grads, n_layers)


def attr_heads_by_pos_always_z(base, source, grads, n_layers, act="z"):
    return ref().attr_heads_by_pos(base, source, grads, n_layers, "z")


def attr_heads_by_pos_mean_over_batch(base, source, grads, n_layers, act="z"):
    return ref().attr_heads_by_pos(base, source, grads, n_layers, act) / next(iter(base.values())).shape[0]


def attr_patterns_wrong_head_axis(base, source, grads, n_layers):
    out = []
    for layer in range(n_layers):
        name = f"blocks.{layer}.attn.hook_pattern"
        out.append(((source[name] - base[name]) * grads[name]).sum(dim=(0, 1, 3)))
    return torch.stack(out)


def attr_neurons_last_position_only(base, source, grads, n_layers):
    out = []
    for layer in range(n_layers):
        name = f"blocks.{layer}.mlp.hook_post"
        out.append(((source[name] - base[name]) * grads[name])[:, -1].sum(0))
    return torch.stack(out)


def act_patch_resid_post(model, clean_tokens, corrupted_tokens, answer_ids, end_pos):
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean_tokens)
        clean_ld, corrupted_ld = _ld(clean_logits, answer_ids, end_pos), _ld(model(corrupted_tokens), answer_ids, end_pos)
        out = torch.zeros(model.cfg.n_layers, clean_tokens.shape[1])
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.hook_resid_post"
            for pos in range(clean_tokens.shape[1]):
                def hook(x, hook, name=name, pos=pos):
                    x[:, pos] = cache[name][:, pos]
                    return x
                logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
                out[layer, pos] = (_ld(logits, answer_ids, end_pos) - corrupted_ld) / (clean_ld - corrupted_ld)
    return out


def act_patch_resid_unnormalised(model, clean_tokens, corrupted_tokens, answer_ids, end_pos):
    with torch.no_grad():
        clean_ld = _ld(model(clean_tokens), answer_ids, end_pos)
        corrupted_ld = _ld(model(corrupted_tokens), answer_ids, end_pos)
    return ref().act_patch_resid(model, clean_tokens, corrupted_tokens, answer_ids, end_pos) * (clean_ld - corrupted_ld)


def _heads_by_pos(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, act, all_positions=False, name_of=None):
    name_of = name_of or (lambda layer: f"blocks.{layer}.attn.hook_{act}")
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean_tokens)
        clean_ld, corrupted_ld = _ld(clean_logits, answer_ids, end_pos), _ld(model(corrupted_tokens), answer_ids, end_pos)
        P, H = clean_tokens.shape[1], model.cfg.n_heads
        out = torch.zeros(model.cfg.n_layers, P, H)
        for layer in range(model.cfg.n_layers):
            name = name_of(layer)
            for pos in range(P):
                for head in range(H):
                    def hook(x, hook, name=name, pos=pos, head=head):
                        if all_positions:
                            x[:, :, head] = cache[name][:, :, head]
                        else:
                            x[:, pos, head] = cache[name][:, pos, head]
                        return x
                    logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
                    out[layer, pos, head] = (_ld(logits, answer_ids, end_pos) - corrupted_ld) / (clean_ld - corrupted_ld)
    return out


def act_patch_heads_by_pos_all_positions(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, act="z"):
    return _heads_by_pos(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, act, all_positions=True)


def act_patch_heads_by_pos_always_z(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, act="z"):
    return _heads_by_pos(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, "z")


def act_patch_patterns_query_axis(model, clean_tokens, corrupted_tokens, answer_ids, end_pos):
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean_tokens)
        clean_ld, corrupted_ld = _ld(clean_logits, answer_ids, end_pos), _ld(model(corrupted_tokens), answer_ids, end_pos)
        out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.attn.hook_pattern"
            for head in range(model.cfg.n_heads):
                def hook(x, hook, name=name, head=head):
                    x[:, :, head] = cache[name][:, :, head]
                    return x
                logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
                out[layer, head] = (_ld(logits, answer_ids, end_pos) - corrupted_ld) / (clean_ld - corrupted_ld)
    return out


def act_patch_neurons_end_only(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, layer, neurons):
    name = f"blocks.{layer}.mlp.hook_post"
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean_tokens)
        clean_ld, corrupted_ld = _ld(clean_logits, answer_ids, end_pos), _ld(model(corrupted_tokens), answer_ids, end_pos)
        out = torch.zeros(len(neurons))
        for i, neuron in enumerate(neurons):
            def hook(x, hook, neuron=neuron):
                rows = torch.arange(x.shape[0])
                x[rows, end_pos, neuron] = cache[name][rows, end_pos, neuron]
                return x
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
            out[i] = (_ld(logits, answer_ids, end_pos) - corrupted_ld) / (clean_ld - corrupted_ld)
    return out


def act_patch_neurons_sorted(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, layer, neurons):
    return ref().act_patch_neurons(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, layer, sorted(neurons))


def pearson_correlation_uncentred(x, y):
    x, y = x.flatten().double(), y.flatten().double()
    return (x @ y / (x.norm() * y.norm())).item()


def pearson_correlation_covariance(x, y):
    x, y = x.flatten().double(), y.flatten().double()
    return ((x - x.mean()) * (y - y.mean())).mean().item()


# ------------------------------------------------------------------------------------------- Part 4
def second_copy_logprob_whole_copy(logits, tokens, n):
    logprobs = logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    return logprobs[:, n:].mean()


def second_copy_logprob_unshifted(logits, tokens, n):
    logprobs = logits.log_softmax(-1).gather(-1, tokens[:, :, None])[..., 0]
    return logprobs[:, n + 2:].mean()


def corrupt_first_copy_overwrites_bos(tokens, n, other):
    out = tokens.clone()
    out[:, :n] = other[:, :n]
    return out


def corrupt_first_copy_in_place(tokens, n, other):
    tokens[:, 1:n + 1] = other[:, 1:n + 1]
    return tokens


def _iag(model, tokens, names, metric):
    acts, grads = {}, {}
    fwd = [(nm, lambda x, hook, nm=nm: acts.__setitem__(nm, x.detach().clone()) or x) for nm in names]
    bwd = [(nm, lambda g, hook, nm=nm: grads.__setitem__(nm, g.detach().clone())) for nm in names]
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        value = metric(model(tokens))
        value.backward()
    model.zero_grad(set_to_none=True)
    return value.item(), acts, grads


def induction_acts_and_grads_of_the_loss(model, tokens, names):
    n = (tokens.shape[1] - 1) // 2
    return _iag(model, tokens, names, lambda logits: -ref().second_copy_logprob(logits, tokens, n))


def induction_acts_and_grads_every_position(model, tokens, names):
    return _iag(model, tokens, names, lambda logits: logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None]).mean())


def induction_head_attribution_gradient_on_corrupted(model, clean_tokens, corrupted_tokens):
    return -induction_head_attribution_swapped(model, clean_tokens, corrupted_tokens)


def induction_head_attribution_swapped(model, clean_tokens, corrupted_tokens):
    return ref().induction_head_attribution(model, corrupted_tokens, clean_tokens)


def induction_head_attribution_layer_zero_only(model, clean_tokens, corrupted_tokens):
    out = ref().induction_head_attribution(model, clean_tokens, corrupted_tokens)
    out[1:] = 0
    return out


def induction_patch_by_pos_metric_not_minus_base(model, clean_tokens, corrupted_tokens, act="z"):
    n = (clean_tokens.shape[1] - 1) // 2
    with torch.no_grad():
        base = ref().second_copy_logprob(model(clean_tokens), clean_tokens, n)
    return ref().induction_patch_by_pos(model, clean_tokens, corrupted_tokens, act) + base


def induction_patch_by_pos_denoising(model, clean_tokens, corrupted_tokens, act="z"):
    return -ref().induction_patch_by_pos(model, corrupted_tokens, clean_tokens, act)


# ------------------------------------------------------------------------------------------- Part 5
def _qk_keys(base, source, grads, n_layers, attn_scale, mask=True, row=False):
    out = []
    for layer in range(n_layers):
        p = f"blocks.{layer}.attn."
        q, k, ks = base[p + "hook_q"], base[p + "hook_k"], source[p + "hook_k"]
        pattern, grad = base[p + "hook_pattern"], grads[p + "hook_pattern"]
        P = q.shape[1]
        causal = torch.tril(torch.ones(P, P, dtype=torch.bool))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / attn_scale
        new = torch.einsum("bqhd,bkhd->bhqk", q, ks) / attn_scale
        per = []
        for s in range(P):
            sc = scores.clone()
            if row:
                sc[..., s, :] = new[..., s, :]
            else:
                sc[..., s] = new[..., s]
            if mask:
                sc = sc.masked_fill(~causal, float("-inf"))
            per.append(((sc.softmax(-1) - pattern) * grad).sum(dim=(0, 2, 3)))
        out.append(torch.stack(per))
    return torch.stack(out)


def qk_fix_keys_no_causal_mask(base, source, grads, n_layers, attn_scale):
    return _qk_keys(base, source, grads, n_layers, attn_scale, mask=False)


def qk_fix_keys_patches_a_row(base, source, grads, n_layers, attn_scale):
    return _qk_keys(base, source, grads, n_layers, attn_scale, row=True)


def qk_fix_queries_no_scale(base, source, grads, n_layers, attn_scale):
    return ref().qk_fix_queries(base, source, grads, n_layers, 1.0)


def qk_fix_queries_heads_and_positions_swapped(base, source, grads, n_layers, attn_scale):
    return ref().qk_fix_queries(base, source, grads, n_layers, attn_scale).transpose(1, 2).reshape(n_layers, -1, base["blocks.0.attn.hook_q"].shape[2])


def graddrop_heads_by_pos_no_abs(model, clean_tokens, corrupted_tokens, answer_ids, end_pos):
    # sum of signed attributions per dropped layer: cancellation comes back
    gd = ref().graddrop_heads_by_pos(model, clean_tokens, corrupted_tokens, answer_ids, end_pos)
    with torch.no_grad():
        clean_ld, corrupted_ld = _ld(model(clean_tokens), answer_ids, end_pos), _ld(model(corrupted_tokens), answer_ids, end_pos)
    names = [f"blocks.{li}.attn.hook_z" for li in range(model.cfg.n_layers)]
    _, base, grads = ref().acts_and_grads(model, corrupted_tokens, answer_ids, end_pos, clean_ld, corrupted_ld, names)
    _, source, _ = ref().acts_and_grads(model, clean_tokens, answer_ids, end_pos, clean_ld, corrupted_ld, names)
    plain = ref().attr_heads_by_pos(base, source, grads, model.cfg.n_layers)
    return gd * plain.sign()


def graddrop_heads_by_pos_divides_by_n_layers(model, clean_tokens, corrupted_tokens, answer_ids, end_pos):
    L = model.cfg.n_layers
    return ref().graddrop_heads_by_pos(model, clean_tokens, corrupted_tokens, answer_ids, end_pos) * (L - 1) / L


WRONG = {
    "toy_network": [toy_network_tanh, toy_network_no_nonlinearity],
    "toy_gradient": [toy_gradient_of_the_mean, toy_gradient_linear_part_only],
    "linear_estimate": [linear_estimate_wrong_sign, linear_estimate_gradient_dot_b],
    "relative_error": [relative_error_without_abs, relative_error_over_estimate],
    "mean_logit_diff": [mean_logit_diff_last_position, mean_logit_diff_with_item],
    "normalised_metric": [normalised_metric_swapped, normalised_metric_unnormalised],
    "acts_and_grads": [acts_and_grads_raw_logit_diff, acts_and_grads_keyed_by_hook_name],
    "attr_resid": [attr_resid_mean_over_batch, attr_resid_base_minus_source],
    "attr_heads_by_pos": [attr_heads_by_pos_always_z, attr_heads_by_pos_mean_over_batch],
    "attr_patterns": [attr_patterns_wrong_head_axis],
    "attr_neurons": [attr_neurons_last_position_only],
    "act_patch_resid": [act_patch_resid_post, act_patch_resid_unnormalised],
    "act_patch_heads_by_pos": [act_patch_heads_by_pos_all_positions, act_patch_heads_by_pos_always_z],
    "act_patch_patterns": [act_patch_patterns_query_axis],
    "act_patch_neurons": [act_patch_neurons_end_only, act_patch_neurons_sorted],
    "pearson_correlation": [pearson_correlation_uncentred, pearson_correlation_covariance],
    "second_copy_logprob": [second_copy_logprob_whole_copy, second_copy_logprob_unshifted],
    "corrupt_first_copy": [corrupt_first_copy_overwrites_bos, corrupt_first_copy_in_place],
    "induction_acts_and_grads": [induction_acts_and_grads_of_the_loss, induction_acts_and_grads_every_position],
    "induction_head_attribution": [induction_head_attribution_gradient_on_corrupted, induction_head_attribution_layer_zero_only],
    "induction_patch_by_pos": [induction_patch_by_pos_metric_not_minus_base, induction_patch_by_pos_denoising],
    "qk_fix_keys": [qk_fix_keys_no_causal_mask, qk_fix_keys_patches_a_row],
    "qk_fix_queries": [qk_fix_queries_no_scale, qk_fix_queries_heads_and_positions_swapped],
    "graddrop_heads_by_pos": [graddrop_heads_by_pos_no_abs, graddrop_heads_by_pos_divides_by_n_layers],
}
