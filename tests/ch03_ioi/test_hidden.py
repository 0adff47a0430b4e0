"""Hidden checks of chapter 3: each compares the learner's function with the reference on the shipped model
`ioi_gpt2_2l` (prompts the notebook uses and prompts it never uses) and on random tensors, and checks a behaviour
(padding, invariances, what a patch that changes nothing must give)."""
import functools

import torch

from tests.ch03_ioi.conftest import cached
from tests.harness import as_number, assert_close, changed_in_place, exercise, tensor_of


# --------------------------------------------------------------------------------------------- helpers
_tensor, _num = tensor_of, as_number
_close = functools.partial(assert_close, atol=1e-4)


def _args(d):
    return d.answer_ids, d.word_idx["end"]


def _end_ld(logits, d):
    end = logits[torch.arange(len(d)), d.word_idx["end"]]
    return end.gather(1, d.answer_ids[:, :1])[:, 0] - end.gather(1, d.answer_ids[:, 1:])[:, 0]


def _heads_as_set(heads, what):
    assert isinstance(heads, (list, tuple)), f"{what}: expected a list of (layer, head) pairs, got {type(heads).__name__}"
    return {tuple(int(x) for x in head) for head in heads}


def _every_head(model):
    return [(layer, h) for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]


def _causal_random_pattern(batch, heads, seq, gen):
    scores = torch.randn(batch, heads, seq, seq, generator=gen)
    future = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


# ------------------------------------------------------------------------------------------- Part 1
@exercise("logit_diff")
def test_logit_diff_matches_reference_on_random_logits(impl, ref, seed):
    logits = torch.randn(5, 7, 11)
    answers = torch.randint(0, 11, (5, 2))
    end = torch.randint(0, 7, (5,))
    _close(impl.logit_diff(logits, answers, end), ref.logit_diff(logits, answers, end), "logit_diff on random logits")


@exercise("logit_diff")
def test_logit_diff_matches_reference_on_padded_prompts(impl, ref, model, ioi_mixed):
    with torch.no_grad():
        logits = model(ioi_mixed.tokens)
    _close(impl.logit_diff(logits, *_args(ioi_mixed)), ref.logit_diff(logits, *_args(ioi_mixed)),
           "logit_diff on prompts of different lengths (right-padded: END is word_idx['end'], not position -1)")


@exercise("logit_diff")
def test_logit_diff_reads_end_and_is_antisymmetric(impl, seed):
    logits = torch.randn(3, 6, 9)
    answers, end = torch.tensor([[1, 2], [3, 4], [5, 6]]), torch.tensor([2, 5, 0])
    base = _tensor(impl.logit_diff(logits, answers, end), "logit_diff")
    garbage = logits.clone()
    for b, e in enumerate(end.tolist()):
        garbage[b, e + 1:] = 1e4 * torch.randn_like(garbage[b, e + 1:])
        garbage[b, :e] = -1e4
    _close(impl.logit_diff(garbage, answers, end), base, "logit_diff must only read each prompt's END position")
    _close(impl.logit_diff(logits, answers.flip(1), end), -base, "swapping correct and incorrect should negate the result")


@exercise("corrupt_s2")
def test_corrupt_s2_matches_reference_on_random_tokens(impl, ref, seed):
    tokens = torch.randint(0, 100, (6, 9))
    s2, new = torch.randint(0, 9, (6,)), torch.randint(100, 200, (6,))
    _close(impl.corrupt_s2(tokens, s2, new), ref.corrupt_s2(tokens, s2, new), "corrupt_s2 on random tokens")


@exercise("corrupt_s2")
def test_corrupt_s2_flips_real_prompts(impl, ref, ioi_mixed):
    d = ioi_mixed
    got = _tensor(impl.corrupt_s2(d.tokens, d.word_idx["S2"], d.io_ids), "corrupt_s2")
    _close(got, ref.corrupt_s2(d.tokens, d.word_idx["S2"], d.io_ids), "corrupt_s2 flipping S2 to IO on real prompts")


@exercise("corrupt_s2")
def test_corrupt_s2_changes_only_s2(impl, ioi_small):
    d = ioi_small["data"]
    got = _tensor(impl.corrupt_s2(d.tokens, d.word_idx["S2"], d.io_ids), "corrupt_s2")
    assert not changed_in_place(impl), "corrupt_s2 modified its input tokens: return a modified copy"
    changed = (got != d.tokens).sum(1)
    assert (changed == 1).all(), (f"exactly one token per prompt (S2) should change; changed {changed.tolist()} "
                                  "(S1 must stay: replace the token at s2_pos only)")
    rows = torch.arange(len(d))
    assert torch.equal(got[rows, d.word_idx["S1"]], d.s_ids), "S1 must keep the subject's name"


# ------------------------------------------------------------------------------------------- Part 2
@exercise("logit_diff_directions")
def test_logit_diff_directions_matches_reference_on_random_weights(impl, ref, seed):
    W_U = torch.randn(16, 30)
    answers = torch.randint(0, 30, (5, 2))
    _close(impl.logit_diff_directions(W_U, answers), ref.logit_diff_directions(W_U, answers), "logit_diff_directions on random W_U")


@exercise("logit_diff_directions")
def test_logit_diff_directions_matches_reference_on_shipped_model(impl, ref, model, ioi_mixed):
    _close(impl.logit_diff_directions(model.W_U, ioi_mixed.answer_ids), ref.logit_diff_directions(model.W_U, ioi_mixed.answer_ids),
           "logit_diff_directions with the shipped model's W_U")


@exercise("logit_diff_directions")
def test_logit_diff_directions_is_antisymmetric(impl, seed):
    W_U = torch.randn(8, 10)
    answers = torch.tensor([[1, 2], [3, 3]])
    out = _tensor(impl.logit_diff_directions(W_U, answers), "logit_diff_directions")
    assert out.shape == (2, 8), f"logit_diff_directions should return [batch, d_model] = (2, 8); got {tuple(out.shape)}"
    _close(impl.logit_diff_directions(W_U, answers.flip(1)), -out, "swapping the answers should negate the direction")
    assert out[1].abs().max() == 0, "when correct and incorrect are the same token, the direction should be 0"


@exercise("apply_final_ln")
def test_apply_final_ln_matches_reference_on_random_stacks(impl, ref, seed):
    stack, scale = torch.randn(3, 4, 5, 16) * 3 + 1, torch.rand(5, 1) + 0.5
    _close(impl.apply_final_ln(stack, scale), ref.apply_final_ln(stack, scale), "apply_final_ln on a [3, 4, batch 5, 16] stack")


@exercise("apply_final_ln")
def test_apply_final_ln_matches_transformerlens_normalisation(impl, model, ioi_mixed):
    d = ioi_mixed
    with torch.no_grad():
        _, cache = model.run_with_cache(d.tokens)
    rows, end = torch.arange(len(d)), d.word_idx["end"]
    resid = cache["resid_post", model.cfg.n_layers - 1][rows, end]
    _close(impl.apply_final_ln(resid, cache["ln_final.hook_scale"][rows, end]), cache["ln_final.hook_normalized"][rows, end],
           "apply_final_ln of the final residual stream at END vs cache['ln_final.hook_normalized']", atol=1e-4)


@exercise("apply_final_ln")
def test_apply_final_ln_ignores_a_constant_shift(impl, seed):
    stack, scale = torch.randn(2, 3, 8), torch.rand(3, 1) + 0.5
    base = _tensor(impl.apply_final_ln(stack, scale), "apply_final_ln")
    _close(impl.apply_final_ln(stack + 5.0, scale), base, "adding the same number to every coordinate must not change the "
           "result (LayerNorm centres each vector)")
    _close(impl.apply_final_ln(2 * stack, 2 * scale), base, "doubling the vectors and the scale must not change the result")


def _ref_model_result(ref_results, ref, name, model, d, *extra):
    key = (name, id(d)) + tuple(str(e) for e in extra)
    return cached(ref_results, key, lambda: getattr(ref, name)(model, d.tokens, *_args(d), *extra))


@exercise("logit_lens_logit_diff")
def test_logit_lens_matches_reference_on_padded_prompts(impl, ref, model, ioi_mixed, ref_results):
    with torch.no_grad():
        got = impl.logit_lens_logit_diff(model, ioi_mixed.tokens, *_args(ioi_mixed))
    _close(got, _ref_model_result(ref_results, ref, "logit_lens_logit_diff", model, ioi_mixed),
           "logit_lens_logit_diff on prompts of different lengths", atol=1e-3)


@exercise("logit_lens_logit_diff")
def test_logit_lens_matches_reference_on_fresh_prompts(impl, ref, model, ioi_fresh, ref_results):
    d = ioi_fresh["data"]
    with torch.no_grad():
        got = impl.logit_lens_logit_diff(model, d.tokens, *_args(d))
    _close(got, _ref_model_result(ref_results, ref, "logit_lens_logit_diff", model, d), "logit_lens_logit_diff on fresh prompts",
           atol=1e-3)


@exercise("logit_lens_logit_diff")
def test_logit_lens_ends_at_the_logit_difference(impl, model, ioi_small):
    d = ioi_small["data"]
    with torch.no_grad():
        got = _tensor(impl.logit_lens_logit_diff(model, d.tokens, *_args(d)), "logit_lens_logit_diff")
        want = _end_ld(model(d.tokens), d).mean() - (model.b_U[d.io_ids] - model.b_U[d.s_ids]).mean()
    assert got.shape == (2 * model.cfg.n_layers + 1,), f"expected [2 n_layers + 1] entries; got shape {tuple(got.shape)}"
    _close(got[-1], want, "the last entry of the logit lens should be the mean logit difference minus the unembedding bias "
           "share", atol=1e-3)


@exercise("dla_by_component")
def test_dla_by_component_matches_reference_on_padded_prompts(impl, ref, model, ioi_mixed, ref_results):
    with torch.no_grad():
        got = impl.dla_by_component(model, ioi_mixed.tokens, *_args(ioi_mixed))
    _close(got, _ref_model_result(ref_results, ref, "dla_by_component", model, ioi_mixed), "dla_by_component on padded prompts",
           atol=1e-3)


@exercise("dla_by_component")
def test_dla_by_component_matches_reference_on_fresh_prompts(impl, ref, model, ioi_fresh, ref_results):
    d = ioi_fresh["data"]
    with torch.no_grad():
        got = impl.dla_by_component(model, d.tokens, *_args(d))
    _close(got, _ref_model_result(ref_results, ref, "dla_by_component", model, d), "dla_by_component on fresh prompts", atol=1e-3)


@exercise("dla_by_component")
def test_dla_by_component_adds_up_to_the_logit_difference(impl, model, ioi_small):
    tokens, data = ioi_small["flipped"], ioi_small["data"]
    with torch.no_grad():
        got = _tensor(impl.dla_by_component(model, tokens, *_args(data)), "dla_by_component")
        want = _end_ld(model(tokens), data).mean() - (model.b_U[data.io_ids] - model.b_U[data.s_ids]).mean()
    _close(got.sum(), want, "on flipped prompts, the components should add up to the (negative) mean logit difference "
           "minus the unembedding bias share", atol=1e-3)


@exercise("dla_by_head")
def test_dla_by_head_matches_reference_on_padded_prompts(impl, ref, model, ioi_mixed, ref_results):
    with torch.no_grad():
        got = impl.dla_by_head(model, ioi_mixed.tokens, *_args(ioi_mixed))
    _close(got, _ref_model_result(ref_results, ref, "dla_by_head", model, ioi_mixed), "dla_by_head on padded prompts", atol=1e-3)


@exercise("dla_by_head")
def test_dla_by_head_matches_reference_on_fresh_prompts(impl, ref, model, ioi_fresh, ref_results):
    d = ioi_fresh["data"]
    with torch.no_grad():
        got = impl.dla_by_head(model, d.tokens, *_args(d))
    _close(got, _ref_model_result(ref_results, ref, "dla_by_head", model, d), "dla_by_head on fresh prompts", atol=1e-3)


@exercise("dla_by_head")
def test_dla_by_head_adds_up_to_each_attention_layer(impl, model, ioi_small):
    d = ioi_small["data"]
    with torch.no_grad():
        got = _tensor(impl.dla_by_head(model, d.tokens, *_args(d)), "dla_by_head")
        _, cache = model.run_with_cache(d.tokens)
    assert got.shape == (model.cfg.n_layers, model.cfg.n_heads), f"expected [n_layers, n_heads]; got {tuple(got.shape)}"
    rows, end = torch.arange(len(d)), d.word_idx["end"]
    scale = cache["ln_final.hook_scale"][rows, end]
    direction = (model.W_U[:, d.io_ids] - model.W_U[:, d.s_ids]).T
    for layer in range(model.cfg.n_layers):
        x = cache["attn_out", layer][rows, end] - model.b_O[layer]
        want = (((x - x.mean(-1, keepdim=True)) / scale) * direction).sum(-1).mean()
        _close(got[layer].sum(), want, f"layer {layer}'s heads should add up to its attention output (without b_O)", atol=1e-3)


@exercise("dla_on_names")
def test_dla_on_names_matches_reference_on_answers(impl, ref, model, ioi_mixed, ref_results):
    d = ioi_mixed
    with torch.no_grad():
        got = impl.dla_on_names(model, d.tokens, d.answer_ids, d.word_idx["end"])
    want = cached(ref_results, ("dla_on_names", "mixed"), lambda: ref.dla_on_names(model, d.tokens, d.answer_ids, d.word_idx["end"]))
    _close(got, want, "dla_on_names with the (IO, S) columns on padded prompts", atol=1e-3)


@exercise("dla_on_names")
def test_dla_on_names_matches_reference_on_random_names(impl, ref, model, ioi_fresh, name_ids, seed):
    d = ioi_fresh["data"]
    names = name_ids[torch.randint(0, len(name_ids), (len(d), 4))]
    with torch.no_grad():
        got = impl.dla_on_names(model, d.tokens, names, d.word_idx["end"])
        want = ref.dla_on_names(model, d.tokens, names, d.word_idx["end"])
    _close(got, want, "dla_on_names with 4 random names per prompt", atol=1e-3)


@exercise("dla_on_names")
def test_dla_on_names_difference_is_the_head_attribution(impl, ref, model, ioi_small, ref_results):
    d = ioi_small["data"]
    with torch.no_grad():
        got = _tensor(impl.dla_on_names(model, d.tokens, d.answer_ids, d.word_idx["end"]), "dla_on_names")
    want = cached(ref_results, ("dla_by_head", "small"), lambda: ref.dla_by_head(model, d.tokens, *_args(d)))
    assert got.shape == (model.cfg.n_layers, model.cfg.n_heads, 2), f"expected [n_layers, n_heads, 2]; got {tuple(got.shape)}"
    _close(got[..., 0] - got[..., 1], want, "IO column minus S column should equal each head's logit-difference attribution",
           atol=1e-3)


# ------------------------------------------------------------------------------------------- Part 3
@exercise("attention_from_end")
def test_attention_from_end_matches_reference_on_random_patterns(impl, ref, seed):
    gen = torch.Generator().manual_seed(3)
    pattern = _causal_random_pattern(5, 3, 8, gen)
    end = torch.randint(4, 8, (5,), generator=gen)
    key = torch.stack([torch.randint(0, int(e) + 1, (1,), generator=gen)[0] for e in end])
    _close(impl.attention_from_end(pattern, end, key), ref.attention_from_end(pattern, end, key),
           "attention_from_end on random causal patterns")


@exercise("attention_from_end")
def test_attention_from_end_matches_reference_on_shipped_model(impl, ref, model, ioi_mixed):
    d = ioi_mixed
    with torch.no_grad():
        _, cache = model.run_with_cache(d.tokens)
    for layer in range(model.cfg.n_layers):
        for word in ("IO", "S1", "S2"):
            _close(impl.attention_from_end(cache["pattern", layer], d.word_idx["end"], d.word_idx[word]),
                   ref.attention_from_end(cache["pattern", layer], d.word_idx["end"], d.word_idx[word]),
                   f"attention from END to {word} in layer {layer} (padded prompts)")


@exercise("attention_from_end")
def test_attention_from_end_pairs_each_prompt_with_its_own_positions(impl, seed):
    pattern = torch.zeros(2, 1, 3, 3)
    pattern[0, 0, 2] = torch.tensor([0.0, 1.0, 0.0])  # prompt 0: END 2 -> key 1
    pattern[1, 0, 1, 0] = 1.0  # prompt 1: END 1 -> key 0
    pattern[1, 0, 2] = torch.tensor([0.0, 0.0, 1.0])
    pattern[0, 0, 1, 0] = 1.0
    _close(impl.attention_from_end(pattern, torch.tensor([2, 1]), torch.tensor([1, 0])), torch.tensor([1.0]),
           "each prompt's END must be paired with that prompt's key position (not every END with every key)")


# ------------------------------------------------------------------------------------------- Part 4
@exercise("patching_metric")
def test_patching_metric_matches_reference_on_random_values(impl, ref, seed):
    ld, clean, corrupted = torch.randn(3, 4), torch.tensor(2.5), torch.tensor(-1.5)
    _close(impl.patching_metric(ld, clean, corrupted), ref.patching_metric(ld, clean, corrupted), "patching_metric on a grid")


@exercise("patching_metric")
def test_patching_metric_maps_clean_to_one_and_corrupted_to_zero(impl):
    _close(impl.patching_metric(torch.tensor([4.0, -2.0, 1.0]), torch.tensor(4.0), torch.tensor(-2.0)),
           torch.tensor([1.0, 0.0, 0.5]), "patching_metric(ld, clean=4, corrupted=-2) of [4, -2, 1]")


@exercise("patching_metric")
def test_patching_metric_with_a_positive_corrupted_baseline(impl):
    _close(impl.patching_metric(torch.tensor([3.0, 1.0, 2.0]), torch.tensor(3.0), torch.tensor(1.0)),
           torch.tensor([1.0, 0.0, 0.5]), "patching_metric(ld, clean=3, corrupted=1) of [3, 1, 2]")


def _ref_patch(ref_results, ref, name, model, setting, corruption, *extra):
    d = setting["data"]
    key = (name, id(setting), corruption) + tuple(str(e) for e in extra)
    corrupted = setting["abc"].tokens if corruption == "abc" else setting[corruption]
    return cached(ref_results, key, lambda: getattr(ref, name)(model, d.tokens, corrupted, *_args(d), *extra))


def _abc_tokens(setting):
    return setting["abc"].tokens


@exercise("patch_residual")
def test_patch_residual_matches_reference_on_flipped_prompts(impl, ref, model, ioi_small, ref_results):
    d = ioi_small["data"]
    with torch.no_grad():
        got = impl.patch_residual(model, d.tokens, ioi_small["flipped"], *_args(d))
    _close(got, _ref_patch(ref_results, ref, "patch_residual", model, ioi_small, "flipped"),
           "patch_residual (clean vs flipped prompts)", atol=1e-3)


@exercise("patch_residual")
def test_patch_residual_matches_reference_on_fresh_abc_prompts(impl, ref, model, ioi_fresh, ref_results):
    d = ioi_fresh["data"]
    with torch.no_grad():
        got = impl.patch_residual(model, d.tokens, _abc_tokens(ioi_fresh), *_args(d))
        want = cached(ref_results, ("patch_residual", "fresh abc"),
                      lambda: ref.patch_residual(model, d.tokens, _abc_tokens(ioi_fresh), *_args(d)))
    _close(got, want, "patch_residual (clean vs ABC prompts of another template)", atol=1e-3)


@exercise("patch_residual")
def test_patch_residual_layer_zero_restores_only_the_changed_position(impl, model, ioi_small):
    d = ioi_small["data"]
    with torch.no_grad():
        got = _tensor(impl.patch_residual(model, d.tokens, ioi_small["flipped"], *_args(d)), "patch_residual")
    assert got.shape == (model.cfg.n_layers, d.tokens.shape[1]), f"expected [n_layers, pos]; got {tuple(got.shape)}"
    want = torch.zeros(d.tokens.shape[1])
    want[int(d.word_idx["S2"][0])] = 1.0
    _close(got[0], want, "before layer 0 only S2 differs between clean and flipped prompts: restoring it must give 1 and "
           "every other position 0 (patch blocks.0.hook_resid_pre into the corrupted run)", atol=1e-3)


@exercise("patch_head_outputs")
def test_patch_head_outputs_matches_reference_on_flipped_prompts(impl, ref, model, ioi_small, ref_results):
    d = ioi_small["data"]
    with torch.no_grad():
        got = impl.patch_head_outputs(model, d.tokens, ioi_small["flipped"], *_args(d))
    _close(got, _ref_patch(ref_results, ref, "patch_head_outputs", model, ioi_small, "flipped"),
           "patch_head_outputs (clean vs flipped)", atol=1e-3)


@exercise("patch_head_outputs")
def test_patch_head_outputs_matches_reference_on_fresh_abc_prompts(impl, ref, model, ioi_fresh, ref_results):
    d = ioi_fresh["data"]
    with torch.no_grad():
        got = impl.patch_head_outputs(model, d.tokens, _abc_tokens(ioi_fresh), *_args(d))
        want = cached(ref_results, ("patch_head_outputs", "fresh abc"),
                      lambda: ref.patch_head_outputs(model, d.tokens, _abc_tokens(ioi_fresh), *_args(d)))
    _close(got, want, "patch_head_outputs (clean vs ABC prompts of another template)", atol=1e-3)


@exercise("patch_head_outputs")
def test_patch_head_outputs_matches_transformerlens(impl, model, ioi_fresh):
    import contextlib
    import io

    from transformer_lens import patching

    d, corrupted = ioi_fresh["data"], ioi_fresh["flipped"]
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(d.tokens)
        clean, corr = _end_ld(clean_logits, d).mean(), _end_ld(model(corrupted), d).mean()
        got = impl.patch_head_outputs(model, d.tokens, corrupted, *_args(d))
        with contextlib.redirect_stderr(io.StringIO()):
            want = patching.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache,
                                                                lambda lg: (_end_ld(lg, d).mean() - corr) / (clean - corr))
    _close(got, want, "patch_head_outputs vs transformer_lens.patching.get_act_patch_attn_head_out_all_pos", atol=1e-3)


@exercise("patch_head_activation")
def test_patch_head_activation_pattern_matches_reference(impl, ref, model, ioi_small, ref_results):
    d = ioi_small["data"]
    with torch.no_grad():
        got = impl.patch_head_activation(model, d.tokens, ioi_small["flipped"], *_args(d), "pattern")
    _close(got, _ref_patch(ref_results, ref, "patch_head_activation", model, ioi_small, "flipped", "pattern"),
           "patch_head_activation(..., 'pattern') (hook_pattern is [batch, n_heads, q_pos, k_pos])", atol=1e-3)


@exercise("patch_head_activation")
def test_patch_head_activation_values_and_keys_match_reference(impl, ref, model, ioi_fresh, ref_results):
    d = ioi_fresh["data"]
    for activation in ("v", "k"):
        with torch.no_grad():
            got = impl.patch_head_activation(model, d.tokens, ioi_fresh["flipped"], *_args(d), activation)
        want = _ref_patch(ref_results, ref, "patch_head_activation", model, ioi_fresh, "flipped", activation)
        _close(got, want, f"patch_head_activation(..., {activation!r}) on fresh flipped prompts", atol=1e-3)


@exercise("patch_head_activation")
def test_patch_head_activation_z_is_the_head_output(impl, ref, model, ioi_small, ref_results):
    d = ioi_small["data"]
    with torch.no_grad():
        got = impl.patch_head_activation(model, d.tokens, ioi_small["flipped"], *_args(d), "z")
    _close(got, _ref_patch(ref_results, ref, "patch_head_outputs", model, ioi_small, "flipped"),
           "patch_head_activation(..., 'z') should equal patching each head's output", atol=1e-3)


# ------------------------------------------------------------------------------------------- Part 5
@exercise("path_patch_to_logits")
def test_path_patch_to_logits_matches_reference(impl, ref, model, ioi_small, ref_results):
    d = ioi_small["data"]
    with torch.no_grad():
        got = impl.path_patch_to_logits(model, d.tokens, _abc_tokens(ioi_small), *_args(d))
    _close(got, _ref_patch(ref_results, ref, "path_patch_to_logits", model, ioi_small, "abc"),
           "path_patch_to_logits (clean vs ABC)", atol=1e-3)


@exercise("path_patch_to_logits")
def test_path_patch_to_logits_matches_reference_on_fresh_prompts(impl, ref, model, ioi_fresh, ref_results):
    d = ioi_fresh["data"]
    with torch.no_grad():
        got = impl.path_patch_to_logits(model, d.tokens, ioi_fresh["flipped"], *_args(d))
    _close(got, _ref_patch(ref_results, ref, "path_patch_to_logits", model, ioi_fresh, "flipped"),
           "path_patch_to_logits (clean vs flipped, another template)", atol=1e-3)


@exercise("path_patch_to_logits")
def test_path_patch_to_logits_last_layer_is_plain_noising(impl, model, ioi_fresh):
    """The last layer has nothing downstream to freeze: its row is plain patching of ABC head outputs into the clean run."""
    import contextlib
    import io

    from transformer_lens import patching

    d, abc = ioi_fresh["data"], _abc_tokens(ioi_fresh)
    last = model.cfg.n_layers - 1
    with torch.no_grad():
        got = _tensor(impl.path_patch_to_logits(model, d.tokens, abc, *_args(d)), "path_patch_to_logits")
        clean = _end_ld(model(d.tokens), d).mean()
        abc_logits, abc_cache = model.run_with_cache(abc)
        corr = _end_ld(abc_logits, d).mean()
        with contextlib.redirect_stderr(io.StringIO()):
            want = patching.get_act_patch_attn_head_out_all_pos(model, d.tokens, abc_cache,
                                                                lambda lg: (_end_ld(lg, d).mean() - clean) / (clean - corr))
    assert got.shape == (model.cfg.n_layers, model.cfg.n_heads), f"expected [n_layers, n_heads]; got {tuple(got.shape)}"
    _close(got[last], want[last], "last-layer senders: (LD - clean) / (clean - corrupted) after patching the sender's "
           "corrupted z into the clean run", atol=1e-3)


@exercise("path_patch_to_heads")
def test_path_patch_to_heads_values_match_reference(impl, ref, model, ioi_small, ref_results):
    d = ioi_small["data"]
    with torch.no_grad():
        got = impl.path_patch_to_heads(model, d.tokens, _abc_tokens(ioi_small), *_args(d), [(1, 2)], "v", None)
    _close(got, _ref_patch(ref_results, ref, "path_patch_to_heads", model, ioi_small, "abc", [(1, 2)], "v", None),
           "path_patch_to_heads into L1H2's values (all positions)", atol=1e-3)


@exercise("path_patch_to_heads")
def test_path_patch_to_heads_queries_and_keys_match_reference(impl, ref, model, ioi_fresh, ref_results):
    d = ioi_fresh["data"]
    receivers = [(1, 1), (1, 2)]
    for inp, pos in (("q", d.word_idx["end"]), ("k", None), ("v", d.word_idx["S2"])):
        with torch.no_grad():
            got = impl.path_patch_to_heads(model, d.tokens, ioi_fresh["flipped"], *_args(d), receivers, inp, pos)
        want = cached(ref_results, ("path_patch_to_heads", "fresh", inp),
                      lambda: ref.path_patch_to_heads(model, d.tokens, ioi_fresh["flipped"], *_args(d), receivers, inp, pos))
        _close(got, want, f"path_patch_to_heads into {receivers}' {inp} (positions {'all' if pos is None else pos.tolist()})",
               atol=1e-3)


@exercise("path_patch_to_heads")
def test_path_patch_to_heads_only_touches_receivers_at_their_positions(impl, model, ioi_small):
    d = ioi_small["data"]
    bos = torch.zeros(len(d), dtype=torch.long)
    every_last = [(model.cfg.n_layers - 1, h) for h in range(model.cfg.n_heads)]
    with torch.no_grad():
        got = _tensor(impl.path_patch_to_heads(model, d.tokens, _abc_tokens(ioi_small), *_args(d), every_last, "q", bos),
                      "path_patch_to_heads")
    assert got.shape == (model.cfg.n_layers, model.cfg.n_heads), f"expected [n_layers, n_heads]; got {tuple(got.shape)}"
    _close(got, torch.zeros_like(got), "queries at position 0 (BOS) can only attend to BOS: patching them must change nothing "
           "(write the receivers' inputs at receiver_pos only)", atol=1e-4)


# ------------------------------------------------------------------------------------------- Part 6
@exercise("repeated_token_head_scores")
def test_repeated_token_head_scores_match_reference_on_random_patterns(impl, ref, seed):
    gen = torch.Generator().manual_seed(4)
    pattern = _causal_random_pattern(3, 5, 13, gen)
    got, want = impl.repeated_token_head_scores(pattern), ref.repeated_token_head_scores(pattern)
    assert isinstance(got, dict) and set(got) == set(want), f"expected a dict with keys {sorted(want)}"
    for kind in want:
        _close(got[kind], want[kind], f"{kind} score on random causal patterns (n = 6)")


@exercise("repeated_token_head_scores")
def test_repeated_token_head_scores_match_reference_on_shipped_model(impl, ref, model, name_ids):
    gen = torch.Generator().manual_seed(5)
    block = torch.stack([name_ids[torch.randperm(len(name_ids), generator=gen)[:7]] for _ in range(4)])
    tokens = torch.cat([torch.full((4, 1), model.tokenizer.bos_token_id), block, block], dim=1)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    for layer in range(model.cfg.n_layers):
        got, want = impl.repeated_token_head_scores(cache["pattern", layer]), ref.repeated_token_head_scores(cache["pattern", layer])
        for kind in want:
            _close(got[kind], want[kind], f"{kind} score of layer {layer} on repeated names")


@exercise("repeated_token_head_scores")
def test_repeated_token_head_scores_of_perfect_heads(impl):
    n, seq = 4, 9
    heads = torch.zeros(3, seq, seq)
    heads[:, 0, 0] = 1.0
    for q in range(1, seq):
        heads[0, q, q - 1] = 1.0  # previous token
        heads[1, q, q - n if q > n else 0] = 1.0  # duplicate token
        heads[2, q, q - n + 1 if q > n else 0] = 1.0  # induction
    got = impl.repeated_token_head_scores(heads[None])
    _close(got["induction"], torch.tensor([0.0, 0.0, 1.0]), "induction scores of a previous-token, a duplicate-token and an "
           "induction head (second-copy queries only)")
    _close(got["duplicate token"], torch.tensor([0.0, 1.0, 0.0]), "duplicate-token scores of the same three heads")
    _close(got["previous token"], torch.tensor([1.0, 1 / 8, 1 / 8]), "previous-token scores (every query 1..2n)")


@exercise("ov_copy_score")
def test_ov_copy_score_matches_reference_on_every_head(impl, ref, model, name_ids):
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            for negative in (False, True):
                got = _num(impl.ov_copy_score(model, layer, head, name_ids, 5, negative), "ov_copy_score")
                with torch.no_grad():
                    want = ref.ov_copy_score(model, layer, head, name_ids, 5, negative)
                assert abs(got - want) < 1e-6, (f"ov_copy_score of L{layer}H{head} (negative={negative}) is {got:.3f}; expected "
                                                f"{want:.3f}")


@exercise("ov_copy_score")
def test_ov_copy_score_matches_reference_on_random_names_and_k(impl, ref, model, name_ids, seed):
    for k in (1, 3, 10):
        names = name_ids[torch.randperm(len(name_ids))[:30]]
        got = _num(impl.ov_copy_score(model, 1, 1, names, k, False), "ov_copy_score")
        with torch.no_grad():
            want = ref.ov_copy_score(model, 1, 1, names, k, False)
        assert abs(got - want) < 1e-6, f"ov_copy_score of L1H1 on 30 random names with k={k} is {got:.3f}; expected {want:.3f}"


@exercise("ov_copy_score")
def test_ov_copy_score_with_k_equal_to_the_number_of_names_is_one(impl, model, name_ids):
    got = _num(impl.ov_copy_score(model, 0, 2, name_ids[:12], 12, True), "ov_copy_score")
    assert abs(got - 1.0) < 1e-6, f"with k = the number of names every name is in its row's top k: expected 1, got {got}"


def _random_scores(gen, layers=3, heads=4):
    r = lambda: torch.rand(layers, heads, generator=gen)
    return {"dla": 4 * torch.rand(layers, heads, generator=gen) - 2, "attn_io": r(), "attn_s1": r(), "attn_s2": r(),
            "previous token": r(), "duplicate token": r(), "induction": r()}


@exercise("classify_heads")
def test_classify_heads_matches_reference_on_random_scores(impl, ref):
    gen = torch.Generator().manual_seed(6)
    for _ in range(5):
        scores = _random_scores(gen)
        got, want = impl.classify_heads(scores, 0.8, 0.4, 0.5), ref.classify_heads(scores, 0.8, 0.4, 0.5)
        assert isinstance(got, dict) and set(got) == set(want), f"expected a dict with keys {sorted(want)}"
        for kind in want:
            assert _heads_as_set(got[kind], kind) == _heads_as_set(want[kind], kind), (
                f"class {kind!r} on random scores: got {sorted(_heads_as_set(got[kind], kind))}, expected "
                f"{sorted(_heads_as_set(want[kind], kind))}")


@exercise("classify_heads")
def test_classify_heads_matches_reference_on_shipped_model_scores(impl, ref, model, ioi_mixed, ref_results):
    d = ioi_mixed
    dla = cached(ref_results, ("dla_by_head", "mixed"), lambda: ref.dla_by_head(model, d.tokens, *_args(d)))
    with torch.no_grad():
        _, cache = model.run_with_cache(d.tokens)
    attn = {w: torch.stack([ref.attention_from_end(cache["pattern", layer], d.word_idx["end"], d.word_idx[w])
                            for layer in range(model.cfg.n_layers)]) for w in ("IO", "S1", "S2")}
    zeros = torch.zeros_like(dla)
    scores = {"dla": dla, "attn_io": attn["IO"], "attn_s1": attn["S1"], "attn_s2": attn["S2"], "previous token": zeros,
              "duplicate token": zeros, "induction": zeros}
    got, want = impl.classify_heads(scores, 1.0), ref.classify_heads(scores, 1.0)
    for kind in want:
        assert _heads_as_set(got[kind], kind) == _heads_as_set(want[kind], kind), (
            f"class {kind!r} on the shipped model's scores: got {sorted(_heads_as_set(got[kind], kind))}")


@exercise("classify_heads")
def test_classify_heads_thresholds_and_signs(impl):
    z = torch.zeros(1, 4)
    scores = {"dla": torch.tensor([[1.0, -1.0, 0.99, -3.0]]), "attn_io": torch.tensor([[0.3, 0.3, 0.3, 0.2]]),
              "attn_s1": z.clone(), "attn_s2": torch.tensor([[0.0, 0.0, 0.0, 0.5]]),
              "previous token": torch.tensor([[0.4, 0.0, 0.0, 0.0]]), "duplicate token": z.clone(), "induction": z.clone()}
    got = impl.classify_heads(scores, 1.0, 0.3, 0.4)
    expect = {"name mover": {(0, 0)}, "negative name mover": {(0, 1)}, "S-inhibition": set(), "negative S mover": set(),
              "previous token": {(0, 0)}, "duplicate token": set(), "induction": set()}
    for kind, heads in expect.items():
        assert _heads_as_set(got[kind], kind) == heads, (f"class {kind!r}: got {sorted(_heads_as_set(got[kind], kind))}, expected "
                                                         f"{sorted(heads)} (thresholds are inclusive; a negative name mover has "
                                                         "dla <= -threshold; a head with dla -3 is not an S-inhibition head)")


# ------------------------------------------------------------------------------------------- Part 7
@exercise("mean_head_activations")
def test_mean_head_activations_matches_reference(impl, ref, model, ioi_small):
    tokens = ioi_small["abc"].tokens
    with torch.no_grad():
        _close(impl.mean_head_activations(model, tokens), ref.mean_head_activations(model, tokens),
               "mean_head_activations over ABC prompts")


@exercise("mean_head_activations")
def test_mean_head_activations_matches_reference_on_fresh_prompts(impl, ref, model, ioi_fresh):
    tokens = ioi_fresh["data"].tokens
    with torch.no_grad():
        _close(impl.mean_head_activations(model, tokens), ref.mean_head_activations(model, tokens),
               "mean_head_activations over fresh prompts")


@exercise("mean_head_activations")
def test_mean_head_activations_of_one_prompt_is_its_z(impl, model, ioi_small):
    tokens = ioi_small["abc"].tokens[:1]
    with torch.no_grad():
        got = _tensor(impl.mean_head_activations(model, tokens), "mean_head_activations")
        _, cache = model.run_with_cache(tokens)
    _close(got, torch.stack([cache["z", layer][0] for layer in range(model.cfg.n_layers)]),
           "the mean over a single prompt is that prompt's z ([n_layers, pos, n_heads, d_head])")


def _means(ref, ref_results, model, setting, name):
    return cached(ref_results, ("means", name), lambda: ref.mean_head_activations(model, setting["abc"].tokens))


@exercise("mean_ablate_heads")
def test_mean_ablate_heads_matches_reference(impl, ref, model, ioi_small, ref_results):
    d = ioi_small["data"]
    means = _means(ref, ref_results, model, ioi_small, "small")
    for heads in ([(1, 2)], [(0, 1), (1, 1), (1, 3)], _every_head(model)):
        with torch.no_grad():
            got = impl.mean_ablate_heads(model, d.tokens, *_args(d), means, heads)
            want = ref.mean_ablate_heads(model, d.tokens, *_args(d), means, heads)
        _close(got, want, f"mean_ablate_heads of {heads}", atol=1e-3)


@exercise("mean_ablate_heads")
def test_mean_ablate_heads_matches_reference_on_fresh_prompts(impl, ref, model, ioi_fresh, ref_results):
    d = ioi_fresh["data"]
    means = _means(ref, ref_results, model, ioi_fresh, "fresh")
    heads = [(0, 0), (0, 3), (1, 2)]
    with torch.no_grad():
        got = impl.mean_ablate_heads(model, d.tokens, *_args(d), means, heads)
        want = ref.mean_ablate_heads(model, d.tokens, *_args(d), means, heads)
    _close(got, want, f"mean_ablate_heads of {heads} on fresh prompts", atol=1e-3)


@exercise("mean_ablate_heads")
def test_mean_ablate_heads_with_nothing_or_own_means_changes_nothing(impl, model, ioi_small):
    d = ioi_small["data"]
    with torch.no_grad():
        plain = _end_ld(model(d.tokens), d)
        _, cache = model.run_with_cache(d.tokens[:1])
        own = torch.stack([cache["z", layer][0] for layer in range(model.cfg.n_layers)])
        _close(impl.mean_ablate_heads(model, d.tokens, *_args(d), own, []), plain, "ablating no heads", atol=1e-3)
        got = impl.mean_ablate_heads(model, d.tokens[:1], d.answer_ids[:1], d.word_idx["end"][:1], own, _every_head(model))
    _close(got, plain[:1], "ablating every head with the prompt's own activations as 'means' must change nothing", atol=1e-3)


@exercise("circuit_faithfulness")
def test_circuit_faithfulness_matches_reference(impl, ref, model, ioi_small):
    d, abc = ioi_small["data"], ioi_small["abc"].tokens
    for circuit in ([(1, 2)], [(1, 2), (1, 1), (0, 1)], []):
        got = _num(impl.circuit_faithfulness(model, d.tokens, abc, *_args(d), circuit), "circuit_faithfulness")
        with torch.no_grad():
            want = ref.circuit_faithfulness(model, d.tokens, abc, *_args(d), circuit)
        assert abs(got - want) < 1e-3, f"faithfulness of {circuit} is {got:.4f}; expected {want:.4f}"


@exercise("circuit_faithfulness")
def test_circuit_faithfulness_matches_reference_on_fresh_prompts(impl, ref, model, ioi_fresh):
    d, abc = ioi_fresh["data"], ioi_fresh["abc"].tokens
    circuit = [(0, 1), (1, 3)]
    got = _num(impl.circuit_faithfulness(model, d.tokens, abc, *_args(d), circuit), "circuit_faithfulness")
    with torch.no_grad():
        want = ref.circuit_faithfulness(model, d.tokens, abc, *_args(d), circuit)
    assert abs(got - want) < 1e-3, f"faithfulness of {circuit} on fresh prompts is {got:.4f}; expected {want:.4f}"


@exercise("circuit_faithfulness")
def test_circuit_of_every_head_is_fully_faithful(impl, model, ioi_small):
    d, abc = ioi_small["data"], ioi_small["abc"].tokens
    every = [list(head) for head in _every_head(model)]
    got = _num(impl.circuit_faithfulness(model, d.tokens, abc, *_args(d), every), "circuit_faithfulness")
    assert abs(got - 1.0) < 1e-4, f"a circuit of every head (given as [layer, head] lists) ablates nothing: expected 1, got {got}"


@exercise("dla_after_ablation")
def test_dla_after_ablation_matches_reference(impl, ref, model, ioi_small, ref_results):
    d = ioi_small["data"]
    means = _means(ref, ref_results, model, ioi_small, "small")
    for heads in ([(1, 2)], [(0, 1), (1, 1)]):
        with torch.no_grad():
            got = impl.dla_after_ablation(model, d.tokens, *_args(d), means, heads)
            want = ref.dla_after_ablation(model, d.tokens, *_args(d), means, heads)
        _close(got, want, f"dla_after_ablation of {heads}", atol=1e-3)


@exercise("dla_after_ablation")
def test_dla_after_ablation_matches_reference_on_fresh_prompts(impl, ref, model, ioi_fresh, ref_results):
    d = ioi_fresh["data"]
    means = _means(ref, ref_results, model, ioi_fresh, "fresh")
    with torch.no_grad():
        got = impl.dla_after_ablation(model, d.tokens, *_args(d), means, [(1, 2), (1, 3)])
        want = ref.dla_after_ablation(model, d.tokens, *_args(d), means, [(1, 2), (1, 3)])
    _close(got, want, "dla_after_ablation on fresh prompts", atol=1e-3)


@exercise("dla_after_ablation")
def test_dla_after_ablating_nothing_is_the_plain_attribution(impl, ref, model, ioi_small, ref_results):
    d = ioi_small["data"]
    means = _means(ref, ref_results, model, ioi_small, "small")
    plain = cached(ref_results, ("dla_by_head", "small"), lambda: ref.dla_by_head(model, d.tokens, *_args(d)))
    with torch.no_grad():
        got = impl.dla_after_ablation(model, d.tokens, *_args(d), means, [])
    _close(got, plain, "with nothing ablated, every head's attribution is the plain direct logit attribution", atol=1e-3)
