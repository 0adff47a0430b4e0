"""Correct implementations written differently from the reference must pass both the visible checks (what the
learner sees) and every hidden check (the grade): path patching that noises the sender at END only (what Wang et
al. do; equivalent, since every other head is frozen), hooks that store activations instead of `run_with_cache`,
ranks counted instead of `topk`, the final LayerNorm left out of the copy score (in compatibility mode the head's
output is already centred and the scale does not change a ranking), `torch.where` instead of index assignment,
Python loops."""


import torch

from tests.ch03_ioi import test_hidden
from tests.harness import correct_alternatives_test


def _ld(logits, answer_ids, end_pos):
    end = logits[torch.arange(logits.shape[0]), end_pos]
    return end[torch.arange(end.shape[0]), answer_ids[:, 0]] - end[torch.arange(end.shape[0]), answer_ids[:, 1]]


def _z_cache(model, tokens):
    store = {}

    def keep(z, hook):
        store[hook.name] = z.detach().clone()
    logits = model.run_with_hooks(tokens, fwd_hooks=[(lambda name: name.endswith("hook_z"), keep)])
    return logits, store


def path_patch_to_logits(model, clean_tokens, corrupted_tokens, answer_ids, end_pos):
    """Noises the sender at END only, every other head frozen everywhere."""
    clean_logits, clean_z = _z_cache(model, clean_tokens)
    corrupted_logits, corrupted_z = _z_cache(model, corrupted_tokens)
    clean, corrupted = _ld(clean_logits, answer_ids, end_pos).mean(), _ld(corrupted_logits, answer_ids, end_pos).mean()
    rows = torch.arange(clean_tokens.shape[0])
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            hooks = []
            for other in range(model.cfg.n_layers):
                name = f"blocks.{other}.attn.hook_z"

                def freeze(z, hook, name=name, other=other, layer=layer, head=head):
                    new = clean_z[name].clone()
                    if other == layer:
                        new[rows, end_pos, head] = corrupted_z[name][rows, end_pos, head]
                    return new
                hooks.append((name, freeze))
            ld = _ld(model.run_with_hooks(clean_tokens, fwd_hooks=hooks), answer_ids, end_pos).mean()
            out[layer, head] = (ld - clean) / (clean - corrupted)
    return out


def path_patch_to_heads(model, clean_tokens, corrupted_tokens, answer_ids, end_pos, receivers, receiver_input,
                        receiver_pos=None):
    """Records the receivers' inputs with a storing hook and writes them back with one hook per receiver head."""
    clean_logits, clean_z = _z_cache(model, clean_tokens)
    corrupted_logits, corrupted_z = _z_cache(model, corrupted_tokens)
    clean, corrupted = _ld(clean_logits, answer_ids, end_pos).mean(), _ld(corrupted_logits, answer_ids, end_pos).mean()
    rows = torch.arange(clean_tokens.shape[0])
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    lowest = min(layer for layer, _ in receivers)
    for sender_layer in range(lowest):
        for sender_head in range(model.cfg.n_heads):
            def freeze(z, hook, sender_layer=sender_layer, sender_head=sender_head):
                new = clean_z[hook.name].clone()
                if hook.name == f"blocks.{sender_layer}.attn.hook_z":
                    new[:, :, sender_head] = corrupted_z[hook.name][:, :, sender_head]
                return new
            recorded = {}

            def record(act, hook):
                recorded[hook.name] = act.detach().clone()
            names = sorted({f"blocks.{layer}.attn.hook_{receiver_input}" for layer, _ in receivers})
            model.run_with_hooks(clean_tokens, fwd_hooks=[(lambda n: n.endswith("hook_z"), freeze)]
                                 + [(name, record) for name in names])
            hooks = []
            for layer, head in receivers:
                name = f"blocks.{layer}.attn.hook_{receiver_input}"

                def write(act, hook, name=name, head=head):
                    act = act.clone()
                    if receiver_pos is None:
                        act[:, :, head] = recorded[name][:, :, head]
                    else:
                        act[rows, receiver_pos, head] = recorded[name][rows, receiver_pos, head]
                    return act
                hooks.append((name, write))
            ld = _ld(model.run_with_hooks(clean_tokens, fwd_hooks=hooks), answer_ids, end_pos).mean()
            out[sender_layer, sender_head] = (ld - clean) / (clean - corrupted)
    return out


def ov_copy_score(model, layer, head, name_ids, k=5, negative=False):
    """Counts, per row, the entries above the diagonal one; no final LayerNorm."""
    x = model.W_E[name_ids]
    x = x + model.blocks[0].mlp(model.blocks[0].ln2(x))
    sign = -1.0 if negative else 1.0
    logits = sign * (model.blocks[layer].ln1(x) @ model.W_V[layer, head] @ model.W_O[layer, head] @ model.W_U[:, name_ids])
    above = (logits > logits.diagonal()[:, None]).sum(-1)
    return float((above < k).float().mean())


def mean_ablate_heads(model, tokens, answer_ids, end_pos, means, heads):
    """One hook for every layer, torch.where with a head mask, a new tensor returned."""
    wanted = {tuple(h) for h in heads}

    def ablate(z, hook):
        layer = int(hook.name.split(".")[1])
        mask = torch.tensor([(layer, h) in wanted for h in range(z.shape[2])])[:, None]
        return torch.where(mask, means[layer][: z.shape[1]].expand_as(z), z)
    return _ld(model.run_with_hooks(tokens, fwd_hooks=[(lambda name: name.endswith("hook_z"), ablate)]), answer_ids, end_pos)


def circuit_faithfulness(model, tokens, ref_tokens, answer_ids, end_pos, circuit):
    _, ref_z = _z_cache(model, ref_tokens)
    means = torch.stack([ref_z[f"blocks.{layer}.attn.hook_z"].mean(0) for layer in range(model.cfg.n_layers)])
    keep = [tuple(h) for h in circuit]
    outside = [(layer, h) for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads) if (layer, h) not in keep]
    ratio = mean_ablate_heads(model, tokens, answer_ids, end_pos, means, outside).mean() / _ld(model(tokens), answer_ids,
                                                                                             end_pos).mean()
    return float(ratio.detach())


def classify_heads(scores, dla_threshold, attn_threshold=0.3, pattern_threshold=0.4):
    n_layers, n_heads = scores["dla"].shape
    out = {kind: [] for kind in ("name mover", "negative name mover", "S-inhibition", "negative S mover",
                                 "previous token", "duplicate token", "induction")}
    for layer in range(n_layers):
        for h in range(n_heads):
            dla, io, s1, s2 = (float(scores[key][layer, h]) for key in ("dla", "attn_io", "attn_s1", "attn_s2"))
            if io >= attn_threshold and io > s1 and io > s2:
                if dla >= dla_threshold:
                    out["name mover"].append((layer, h))
                if dla <= -dla_threshold:
                    out["negative name mover"].append((layer, h))
            if s2 >= attn_threshold:
                if abs(dla) < dla_threshold:
                    out["S-inhibition"].append((layer, h))
                if dla >= dla_threshold:
                    out["negative S mover"].append((layer, h))
            for kind in ("previous token", "duplicate token", "induction"):
                if float(scores[kind][layer, h]) >= pattern_threshold:
                    out[kind].append((layer, h))
    return out


CASES = [("path_patch_to_logits", path_patch_to_logits), ("path_patch_to_heads", path_patch_to_heads),
         ("ov_copy_score", ov_copy_score), ("mean_ablate_heads", mean_ablate_heads),
         ("circuit_faithfulness", circuit_faithfulness), ("classify_heads", classify_heads)]


test_correct_alternatives_pass_visible_and_hidden_checks = correct_alternatives_test(CASES, test_hidden)
