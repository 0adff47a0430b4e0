"""Known-wrong variants of chapter 3's exercises: the mistakes learners really make. Each must fail at least one
hidden check (tests/ch03_ioi/test_wrong_variants.py asserts it). They are self-contained where they can be; the
patching variants reuse small correct pieces defined here."""

import torch


# ------------------------------------------------------------------------------ shared correct pieces
def _ld(logits, answer_ids, end_pos):
    end = logits[torch.arange(logits.shape[0]), end_pos]
    return end.gather(1, answer_ids[:, :1])[:, 0] - end.gather(1, answer_ids[:, 1:])[:, 0]


def _metric(ld, clean, corrupted):
    return (ld - corrupted) / (clean - corrupted)


def _directions(W_U, answer_ids):
    return (W_U[:, answer_ids[:, 0]] - W_U[:, answer_ids[:, 1]]).T


def _ln(stack, scale):
    return (stack - stack.mean(-1, keepdim=True)) / scale


def _attribute(model, cache, stack, answer_ids, end_pos, ln=_ln):
    rows = torch.arange(end_pos.shape[0])
    scale = cache["ln_final.hook_scale"][rows, end_pos]
    return (ln(stack[:, rows, end_pos], scale) * _directions(model.W_U, answer_ids)).sum(-1).mean(-1)


def _baselines(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, names):
    clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=names)
    corrupted_logits, corrupted_cache = model.run_with_cache(corrupted_tokens, names_filter=names)
    return (clean_cache, corrupted_cache, _ld(clean_logits, answer_ids, end_pos).mean(),
            _ld(corrupted_logits, answer_ids, end_pos).mean())


def _ablation_hooks(means, heads, zero=False):
    by_layer = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    hooks = []
    for layer, hs in by_layer.items():
        def hook(z, hook, layer=layer, hs=hs):
            z[:, :, hs] = 0.0 if zero else means[layer][: z.shape[1], hs]
            return z
        hooks.append((f"blocks.{layer}.attn.hook_z", hook))
    return hooks


# ------------------------------------------------------------------------------------------- Part 1
def logit_diff_at_last_position(logits, answer_ids, end_pos):
    last = logits[:, -1]
    return last.gather(1, answer_ids[:, :1])[:, 0] - last.gather(1, answer_ids[:, 1:])[:, 0]


def logit_diff_s_minus_io(logits, answer_ids, end_pos):
    return -_ld(logits, answer_ids, end_pos)


def corrupt_s2_every_occurrence(tokens, s2_pos, new_ids):
    rows = torch.arange(tokens.shape[0])
    subject = tokens[rows, s2_pos]
    out = tokens.clone()
    mask = tokens == subject[:, None]
    out[mask] = new_ids[:, None].expand_as(tokens)[mask]
    return out


def corrupt_s2_in_place(tokens, s2_pos, new_ids):
    tokens[torch.arange(tokens.shape[0]), s2_pos] = new_ids
    return tokens.clone()


# ------------------------------------------------------------------------------------------- Part 2
def logit_diff_directions_s_minus_io(W_U, answer_ids):
    return -_directions(W_U, answer_ids)


def logit_diff_directions_not_transposed(W_U, answer_ids):
    return W_U[:, answer_ids[:, 0]] - W_U[:, answer_ids[:, 1]]


def apply_final_ln_without_centring(stack, scale):
    return stack / scale


def apply_final_ln_times_scale(stack, scale):
    return (stack - stack.mean(-1, keepdim=True)) * scale


def logit_lens_each_layer_normalised_by_itself(model, tokens, answer_ids, end_pos):
    _, cache = model.run_with_cache(tokens)
    rows = torch.arange(tokens.shape[0])
    acc = cache.accumulated_resid(layer=-1, incl_mid=True)[:, rows, end_pos]
    centred = acc - acc.mean(-1, keepdim=True)
    normed = centred / (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
    return (normed * _directions(model.W_U, answer_ids)).sum(-1).mean(-1)


def logit_lens_at_last_position(model, tokens, answer_ids, end_pos):
    last = torch.full_like(end_pos, tokens.shape[1] - 1)
    _, cache = model.run_with_cache(tokens)
    return _attribute(model, cache, cache.accumulated_resid(layer=-1, incl_mid=True), answer_ids, last)


def dla_by_component_without_scale(model, tokens, answer_ids, end_pos):
    _, cache = model.run_with_cache(tokens)
    return _attribute(model, cache, cache.decompose_resid(layer=-1), answer_ids, end_pos,
                      ln=lambda s, scale: s - s.mean(-1, keepdim=True))


def dla_by_head_head_major(model, tokens, answer_ids, end_pos):
    _, cache = model.run_with_cache(tokens)
    per_head = _attribute(model, cache, cache.stack_head_results(layer=-1), answer_ids, end_pos)
    return per_head.reshape(model.cfg.n_heads, model.cfg.n_layers).T


def dla_by_head_with_bias(model, tokens, answer_ids, end_pos):
    _, cache = model.run_with_cache(tokens)
    stack = cache.stack_head_results(layer=-1)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    stack = stack + model.b_O.repeat_interleave(H, dim=0)[:, None, None] / H  # b_O split over the heads
    return _attribute(model, cache, stack, answer_ids, end_pos).reshape(L, H)


def dla_on_names_first_prompt_names(model, tokens, name_ids, end_pos):
    _, cache = model.run_with_cache(tokens)
    rows = torch.arange(tokens.shape[0])
    results = cache.stack_head_results(layer=-1)[:, rows, end_pos]
    normed = _ln(results, cache["ln_final.hook_scale"][rows, end_pos])
    per_name = normed @ model.W_U[:, name_ids[0]]  # every prompt scored on the first prompt's names
    return per_name.mean(1).reshape(model.cfg.n_layers, model.cfg.n_heads, name_ids.shape[1])


# ------------------------------------------------------------------------------------------- Part 3
def attention_from_end_all_pairs(pattern, end_pos, key_pos):
    return pattern[:, :, end_pos, key_pos].mean(dim=(0, 2))


# ------------------------------------------------------------------------------------------- Part 4
def patching_metric_relative_to_clean(ld, clean_ld, corrupted_ld):
    return ld / clean_ld


def patching_metric_wrong_baseline(ld, clean_ld, corrupted_ld):
    return (ld - corrupted_ld) / clean_ld


def patch_residual_post_instead_of_pre(model, clean_tokens, corrupted_tokens, answer_ids, end_pos):
    clean_logits, clean_cache = model.run_with_cache(clean_tokens)
    clean = _ld(clean_logits, answer_ids, end_pos).mean()
    corrupted = _ld(model(corrupted_tokens), answer_ids, end_pos).mean()
    out = torch.zeros(model.cfg.n_layers, clean_tokens.shape[1])
    for layer in range(model.cfg.n_layers):
        for pos in range(clean_tokens.shape[1]):
            def hook(resid, hook, layer=layer, pos=pos):
                resid[:, pos] = clean_cache["resid_post", layer][:, pos]
                return resid
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", hook)])
            out[layer, pos] = _metric(_ld(logits, answer_ids, end_pos).mean(), clean, corrupted)
    return out


def _patch_heads(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, activation, axis):
    suffix = f"hook_{activation}"
    clean_logits, clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda n: n.endswith(suffix))
    clean = _ld(clean_logits, answer_ids, end_pos).mean()
    corrupted = _ld(model(corrupted_tokens), answer_ids, end_pos).mean()
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.attn.{suffix}"
        for head in range(model.cfg.n_heads):
            def hook(act, hook, name=name, head=head):
                act.select(axis, head).copy_(clean_cache[name].select(axis, head))
                return act
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[(name, hook)])
            out[layer, head] = _metric(_ld(logits, answer_ids, end_pos).mean(), clean, corrupted)
    return out


def patch_head_outputs_head_on_position_axis(model, clean_tokens, corrupted_tokens, answer_ids, end_pos):
    return _patch_heads(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, "z", axis=1)


def patch_head_activation_pattern_on_axis_2(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, activation):
    return _patch_heads(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, activation, axis=2)


def patch_head_activation_pattern_is_z(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, activation):
    """Ignores `activation` and always patches z."""
    return _patch_heads(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, "z", axis=2)


# ------------------------------------------------------------------------------------------- Part 5
def path_patch_to_logits_without_freezing(model, clean_tokens, corrupted_tokens, answer_ids, end_pos):
    """Plain activation patching (noising): the sender's effect through later heads is counted too."""
    is_z = lambda n: n.endswith("hook_z")
    clean_cache, corrupted_cache, clean, corrupted = _baselines(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, is_z)
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            def hook(z, hook, layer=layer, head=head):
                z[:, :, head] = corrupted_cache["z", layer][:, :, head]
                return z
            logits = model.run_with_hooks(clean_tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
            out[layer, head] = _metric(_ld(logits, answer_ids, end_pos).mean(), clean, corrupted) - 1
    return out


def path_patch_to_logits_metric_not_shifted(model, clean_tokens, corrupted_tokens, answer_ids, end_pos):
    """Forgets the '- 1': reports 1 for 'no effect'."""
    return _path_logits(model, clean_tokens, corrupted_tokens, answer_ids, end_pos) + 1


def _path_logits(model, clean_tokens, corrupted_tokens, answer_ids, end_pos):
    is_z = lambda n: n.endswith("hook_z")
    clean_cache, corrupted_cache, clean, corrupted = _baselines(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, is_z)
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for sl in range(model.cfg.n_layers):
        for sh in range(model.cfg.n_heads):
            def freeze(z, hook, sl=sl, sh=sh):
                new = clean_cache[hook.name].clone()
                if hook.name == f"blocks.{sl}.attn.hook_z":
                    new[:, :, sh] = corrupted_cache[hook.name][:, :, sh]
                return new
            logits = model.run_with_hooks(clean_tokens, fwd_hooks=[(is_z, freeze)])
            out[sl, sh] = _metric(_ld(logits, answer_ids, end_pos).mean(), clean, corrupted) - 1
    return out


def _path_heads(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, receivers, receiver_input, receiver_pos,
                ignore_pos=False, whole_layer=False):
    is_z = lambda n: n.endswith("hook_z")
    clean_cache, corrupted_cache, clean, corrupted = _baselines(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, is_z)
    names = {f"blocks.{layer}.attn.hook_{receiver_input}" for layer, _ in receivers}
    rows = torch.arange(clean_tokens.shape[0])
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for sl in range(min(layer for layer, _ in receivers)):
        for sh in range(model.cfg.n_heads):
            def freeze(z, hook, sl=sl, sh=sh):
                new = clean_cache[hook.name].clone()
                if hook.name == f"blocks.{sl}.attn.hook_z":
                    new[:, :, sh] = corrupted_cache[hook.name][:, :, sh]
                return new
            with model.hooks(fwd_hooks=[(is_z, freeze)]):
                _, patched = model.run_with_cache(clean_tokens, names_filter=lambda n: n in names)

            def write(act, hook):
                heads = [h for layer, h in receivers if hook.name == f"blocks.{layer}.attn.hook_{receiver_input}"]
                if whole_layer:
                    heads = list(range(model.cfg.n_heads))
                for h in heads:
                    if receiver_pos is None or ignore_pos:
                        act[:, :, h] = patched[hook.name][:, :, h]
                    else:
                        act[rows, receiver_pos, h] = patched[hook.name][rows, receiver_pos, h]
                return act
            logits = model.run_with_hooks(clean_tokens, fwd_hooks=[(lambda n: n in names, write)])
            out[sl, sh] = _metric(_ld(logits, answer_ids, end_pos).mean(), clean, corrupted) - 1
    return out


def path_patch_to_heads_ignoring_receiver_pos(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, receivers,
                                              receiver_input, receiver_pos=None):
    return _path_heads(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, receivers, receiver_input, receiver_pos,
                       ignore_pos=True)


def path_patch_to_heads_whole_receiver_layer(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, receivers,
                                             receiver_input, receiver_pos=None):
    return _path_heads(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, receivers, receiver_input, receiver_pos,
                       whole_layer=True)


# ------------------------------------------------------------------------------------------- Part 6
def repeated_token_head_scores_all_queries(pattern):
    n = (pattern.shape[-1] - 1) // 2
    diag = lambda offset: pattern.diagonal(offset, dim1=-2, dim2=-1).mean(dim=(0, -1))
    return {"previous token": diag(-1), "duplicate token": diag(-n), "induction": diag(1 - n)}


def repeated_token_head_scores_induction_offset_n(pattern):
    n = (pattern.shape[-1] - 1) // 2
    diag = lambda offset, skip: pattern.diagonal(offset, dim1=-2, dim2=-1)[..., skip:].mean(dim=(0, -1))
    return {"previous token": diag(-1, 0), "duplicate token": diag(-n, 1), "induction": diag(-n - 1, 0)}


def _copy_score(model, layer, head, name_ids, k, negative, with_mlp=True, dim=-1):
    x = model.W_E[name_ids]
    if with_mlp:
        x = x + model.blocks[0].mlp(model.blocks[0].ln2(x))
    out = model.blocks[layer].ln1(x) @ model.W_V[layer, head] @ model.W_O[layer, head]
    out = -out if negative else out
    logits = model.ln_final(out) @ model.W_U[:, name_ids]
    if dim == 0:
        logits = logits.T
    top = logits.topk(k, dim=-1).indices
    return (top == torch.arange(len(name_ids))[:, None]).any(-1).float().mean().item()


def repeated_token_head_scores_previous_second_copy_only(pattern):
    """Averages the previous-token diagonal over the second copy only (the spec says every query 1..2n)."""
    n = (pattern.shape[-1] - 1) // 2
    diag = lambda offset, skip: pattern.diagonal(offset, dim1=-2, dim2=-1)[..., skip:].mean(dim=(0, -1))
    return {"previous token": diag(-1, n), "duplicate token": diag(-n, 1), "induction": diag(1 - n, 2)}


def ov_copy_score_without_mlp0(model, layer, head, name_ids, k=5, negative=False):
    """Skips step 1's MLP 0: the head reads the bare embedding."""
    return _copy_score(model, layer, head, name_ids, k, negative, with_mlp=False)


def ov_copy_score_ranks_columns(model, layer, head, name_ids, k=5, negative=False):
    return _copy_score(model, layer, head, name_ids, k, negative, dim=0)


def ov_copy_score_ignores_negative(model, layer, head, name_ids, k=5, negative=False):
    return _copy_score(model, layer, head, name_ids, k, False)


def classify_heads_abs_dla(scores, dla_threshold, attn_threshold=0.3, pattern_threshold=0.4):
    """Name movers by |dla|: negative name movers end up as name movers too."""
    dla, io, s1, s2 = scores["dla"], scores["attn_io"], scores["attn_s1"], scores["attn_s2"]
    reads_io = (io >= attn_threshold) & (io > s1) & (io > s2)
    reads_s2 = s2 >= attn_threshold
    masks = {"name mover": reads_io & (dla.abs() >= dla_threshold), "negative name mover": reads_io & (dla <= -dla_threshold),
             "S-inhibition": reads_s2 & (dla.abs() < dla_threshold), "negative S mover": reads_s2 & (dla >= dla_threshold)}
    for kind in ("previous token", "duplicate token", "induction"):
        masks[kind] = scores[kind] >= pattern_threshold
    return {kind: [tuple(x) for x in m.nonzero().tolist()] for kind, m in masks.items()}


def classify_heads_ignores_other_names(scores, dla_threshold, attn_threshold=0.3, pattern_threshold=0.4):
    """Name movers by attention to IO alone: a head that attends to S1 even more counts too."""
    dla, io, s2 = scores["dla"], scores["attn_io"], scores["attn_s2"]
    reads_io = io >= attn_threshold
    reads_s2 = s2 >= attn_threshold
    masks = {"name mover": reads_io & (dla >= dla_threshold), "negative name mover": reads_io & (dla <= -dla_threshold),
             "S-inhibition": reads_s2 & (dla.abs() < dla_threshold), "negative S mover": reads_s2 & (dla >= dla_threshold)}
    for kind in ("previous token", "duplicate token", "induction"):
        masks[kind] = scores[kind] >= pattern_threshold
    return {kind: [tuple(x) for x in m.nonzero().tolist()] for kind, m in masks.items()}


def classify_heads_strict_thresholds(scores, dla_threshold, attn_threshold=0.3, pattern_threshold=0.4):
    """Uses > where the rules say >=."""
    dla, io, s1, s2 = scores["dla"], scores["attn_io"], scores["attn_s1"], scores["attn_s2"]
    reads_io = (io > attn_threshold) & (io > s1) & (io > s2)
    reads_s2 = s2 > attn_threshold
    masks = {"name mover": reads_io & (dla > dla_threshold), "negative name mover": reads_io & (dla < -dla_threshold),
             "S-inhibition": reads_s2 & (dla.abs() < dla_threshold), "negative S mover": reads_s2 & (dla > dla_threshold)}
    for kind in ("previous token", "duplicate token", "induction"):
        masks[kind] = scores[kind] > pattern_threshold
    return {kind: [tuple(x) for x in m.nonzero().tolist()] for kind, m in masks.items()}


# ------------------------------------------------------------------------------------------- Part 7
def mean_head_activations_over_positions(model, ref_tokens):
    _, cache = model.run_with_cache(ref_tokens)
    return torch.stack([cache["z", layer].mean(1, keepdim=True).expand_as(cache["z", layer]).mean(0)
                        for layer in range(model.cfg.n_layers)])


def mean_ablate_heads_zero(model, tokens, answer_ids, end_pos, means, heads):
    return _ld(model.run_with_hooks(tokens, fwd_hooks=_ablation_hooks(means, heads, zero=True)), answer_ids, end_pos)


def mean_ablate_heads_batch_mean(model, tokens, answer_ids, end_pos, means, heads):
    """Replaces by the mean over *this* batch instead of the given means."""
    _, cache = model.run_with_cache(tokens)
    own = torch.stack([cache["z", layer].mean(0) for layer in range(model.cfg.n_layers)])
    return _ld(model.run_with_hooks(tokens, fwd_hooks=_ablation_hooks(own, heads)), answer_ids, end_pos)


def mean_ablate_heads_at_end_only(model, tokens, answer_ids, end_pos, means, heads):
    """Replaces the heads' z at END only, not at every position."""
    rows = torch.arange(tokens.shape[0])
    by_layer = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    hooks = []
    for layer, hs in by_layer.items():
        def hook(z, hook, layer=layer, hs=hs):
            for h in hs:
                z[rows, end_pos, h] = means[layer][end_pos, h]
            return z
        hooks.append((f"blocks.{layer}.attn.hook_z", hook))
    return _ld(model.run_with_hooks(tokens, fwd_hooks=hooks), answer_ids, end_pos)


def _means(model, ref_tokens):
    _, cache = model.run_with_cache(ref_tokens)
    return torch.stack([cache["z", layer].mean(0) for layer in range(model.cfg.n_layers)])


def circuit_faithfulness_ablates_the_circuit(model, tokens, ref_tokens, answer_ids, end_pos, circuit):
    means = _means(model, ref_tokens)
    ablated = _ld(model.run_with_hooks(tokens, fwd_hooks=_ablation_hooks(means, [tuple(h) for h in circuit])), answer_ids, end_pos)
    return (ablated.mean() / _ld(model(tokens), answer_ids, end_pos).mean()).item()


def circuit_faithfulness_mean_of_ratios(model, tokens, ref_tokens, answer_ids, end_pos, circuit):
    """Averages per-prompt ratios instead of dividing the two mean logit differences."""
    means = _means(model, ref_tokens)
    keep = {tuple(h) for h in circuit}
    outside = [(layer, h) for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads) if (layer, h) not in keep]
    ablated = _ld(model.run_with_hooks(tokens, fwd_hooks=_ablation_hooks(means, outside)), answer_ids, end_pos)
    return (ablated / _ld(model(tokens), answer_ids, end_pos)).mean().item()


def circuit_faithfulness_means_over_tokens(model, tokens, ref_tokens, answer_ids, end_pos, circuit):
    """Takes the means over the prompts being scored instead of over ref_tokens."""
    means = _means(model, tokens)
    keep = {tuple(h) for h in circuit}
    outside = [(layer, h) for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads) if (layer, h) not in keep]
    ablated = _ld(model.run_with_hooks(tokens, fwd_hooks=_ablation_hooks(means, outside)), answer_ids, end_pos)
    return (ablated.mean() / _ld(model(tokens), answer_ids, end_pos).mean()).item()


def circuit_faithfulness_lists_not_matched(model, tokens, ref_tokens, answer_ids, end_pos, circuit):
    """Compares (layer, head) tuples with the circuit's entries as given: [layer, head] lists never match."""
    means = _means(model, ref_tokens)
    outside = [(layer, h) for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads) if (layer, h) not in circuit]
    ablated = _ld(model.run_with_hooks(tokens, fwd_hooks=_ablation_hooks(means, outside)), answer_ids, end_pos)
    return (ablated.mean() / _ld(model(tokens), answer_ids, end_pos).mean()).item()


def dla_after_ablation_hooks_not_applied(model, tokens, answer_ids, end_pos, means, heads):
    """Runs the ablation, but attributes on a fresh (unablated) cache."""
    model.run_with_hooks(tokens, fwd_hooks=_ablation_hooks(means, heads))
    _, cache = model.run_with_cache(tokens)
    per_head = _attribute(model, cache, cache.stack_head_results(layer=-1), answer_ids, end_pos)
    return per_head.reshape(model.cfg.n_layers, model.cfg.n_heads)


def dla_after_ablation_clean_scale(model, tokens, answer_ids, end_pos, means, heads):
    """Attributes the ablated run's head results with the clean run's final LayerNorm scale."""
    _, clean_cache = model.run_with_cache(tokens)
    with model.hooks(fwd_hooks=_ablation_hooks(means, heads)):
        _, cache = model.run_with_cache(tokens)
    per_head = _attribute(model, clean_cache, cache.stack_head_results(layer=-1), answer_ids, end_pos)
    return per_head.reshape(model.cfg.n_layers, model.cfg.n_heads)


WRONG = {
    "logit_diff": [logit_diff_at_last_position, logit_diff_s_minus_io],
    "corrupt_s2": [corrupt_s2_every_occurrence, corrupt_s2_in_place],
    "logit_diff_directions": [logit_diff_directions_s_minus_io, logit_diff_directions_not_transposed],
    "apply_final_ln": [apply_final_ln_without_centring, apply_final_ln_times_scale],
    "logit_lens_logit_diff": [logit_lens_each_layer_normalised_by_itself, logit_lens_at_last_position],
    "dla_by_component": [dla_by_component_without_scale],
    "dla_by_head": [dla_by_head_head_major, dla_by_head_with_bias],
    "dla_on_names": [dla_on_names_first_prompt_names],
    "attention_from_end": [attention_from_end_all_pairs],
    "patching_metric": [patching_metric_relative_to_clean, patching_metric_wrong_baseline],
    "patch_residual": [patch_residual_post_instead_of_pre],
    "patch_head_outputs": [patch_head_outputs_head_on_position_axis],
    "patch_head_activation": [patch_head_activation_pattern_on_axis_2, patch_head_activation_pattern_is_z],
    "path_patch_to_logits": [path_patch_to_logits_without_freezing, path_patch_to_logits_metric_not_shifted],
    "path_patch_to_heads": [path_patch_to_heads_ignoring_receiver_pos, path_patch_to_heads_whole_receiver_layer],
    "repeated_token_head_scores": [repeated_token_head_scores_all_queries, repeated_token_head_scores_induction_offset_n,
                                   repeated_token_head_scores_previous_second_copy_only],
    "ov_copy_score": [ov_copy_score_ranks_columns, ov_copy_score_ignores_negative, ov_copy_score_without_mlp0],
    "classify_heads": [classify_heads_abs_dla, classify_heads_strict_thresholds, classify_heads_ignores_other_names],
    "mean_head_activations": [mean_head_activations_over_positions],
    "mean_ablate_heads": [mean_ablate_heads_zero, mean_ablate_heads_batch_mean, mean_ablate_heads_at_end_only],
    "circuit_faithfulness": [circuit_faithfulness_ablates_the_circuit, circuit_faithfulness_lists_not_matched,
                             circuit_faithfulness_mean_of_ratios, circuit_faithfulness_means_over_tokens],
    "dla_after_ablation": [dla_after_ablation_hooks_not_applied, dla_after_ablation_clean_scale],
}
