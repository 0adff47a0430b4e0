"""What chapter 6's notebook says you should see, checked on the reference solutions and the shipped models with the
notebook's own settings (8 prompts of IOI template 0, flipped at S2; 8 batches of BOS + R + R with n = 20, the first
copy corrupted). Every "you should see" sentence of the notebook is backed by one assertion here."""

from __future__ import annotations

import pytest
import torch

from tests.ch06_attribution.conftest import hooked_acts_grads
from tests.harness import load_impl


@pytest.fixture(scope="module")
def ref():
    return load_impl("06_attribution", "solutions")


@pytest.fixture(scope="module")
def ioi_run(ref, ioi_model):
    """The notebook's Part 2 setting and stored activations and gradients (denoising: base = corrupted run)."""
    from micourse import ioi

    data = ioi.make_ioi_data(8, seed=0, templates=[0])
    clean = data.tokens
    corrupted = clean.clone()
    corrupted[torch.arange(8), data.word_idx["S2"]] = data.io_ids
    args = (data.answer_ids, data.word_idx["end"])
    with torch.no_grad():
        clean_ld, corrupted_ld = ref.mean_logit_diff(ioi_model(clean), *args), ref.mean_logit_diff(ioi_model(corrupted), *args)
    names = [f"blocks.{li}.attn.hook_{a}" for li in range(2) for a in ("q", "k", "z", "pattern")]
    _, clean_acts, _ = ref.acts_and_grads(ioi_model, clean, *args, clean_ld, corrupted_ld, names)
    _, corrupted_acts, corrupted_grads = ref.acts_and_grads(ioi_model, corrupted, *args, clean_ld, corrupted_ld, names)
    return {"data": data, "clean": clean, "corrupted": corrupted, "args": args, "base": corrupted_acts,
            "source": clean_acts, "grads": corrupted_grads}


@pytest.fixture(scope="module")
def rep_run(ref, ind_model):
    """The notebook's Part 4 setting: noising (base = clean run) on BOS + R + R, n = 20."""
    n, bos, vocab = 20, ind_model.tokenizer.bos_token_id, ind_model.cfg.d_vocab

    def repeated(seed):
        gen = torch.Generator().manual_seed(seed)
        r = torch.randint(0, vocab - 1, (8, n), generator=gen)
        r = r + (r >= bos).long()
        return torch.cat([torch.full((8, 1), bos, dtype=torch.long), r, r], dim=1)

    clean = repeated(0)
    corrupted = ref.corrupt_first_copy(clean, n, repeated(1))
    names = [f"blocks.{li}.attn.hook_{a}" for li in range(2) for a in ("q", "k", "z", "pattern")]
    metric = lambda logits: ref.second_copy_logprob(logits, clean, n)
    base, grads = hooked_acts_grads(ind_model, clean, names, metric)
    source, _ = hooked_acts_grads(ind_model, corrupted, names, lambda logits: ref.second_copy_logprob(logits, corrupted, n))
    return {"clean": clean, "corrupted": corrupted, "n": n, "base": base, "source": source, "grads": grads}


# ------------------------------------------------------------------------------------------- Part 1
def test_toy_estimate_gets_worse_with_saturation_and_with_step_size(ref):
    """Part 1: 'the relative error of the estimate grow with the scale of W, and ... with the size of the step'."""
    def errors(scales, step):
        gen = torch.Generator().manual_seed(0)
        W0, u = torch.randn(8, 16, generator=gen) / 8 ** 0.5, torch.randn(16, generator=gen)
        a = torch.randn(256, 8, generator=gen)
        b = a + step * torch.randn(256, 8, generator=gen)
        out = []
        for scale in scales:
            W = scale * W0
            exact = ref.toy_network(b, W, u) - ref.toy_network(a, W, u)
            out.append(ref.relative_error(ref.linear_estimate(a, b, ref.toy_gradient(a, W, u)), exact))
        return out

    by_scale = errors([0.1, 0.3, 1.0, 3.0, 10.0], 1.0)
    assert all(x < y for x, y in zip(by_scale, by_scale[1:])), f"error by scale of W should increase: {by_scale}"
    by_step = [errors([1.0], s)[0] for s in (0.1, 0.3, 1.0, 3.0)]
    assert all(x < y for x, y in zip(by_step, by_step[1:])), f"error by step size should increase: {by_step}"


# ------------------------------------------------------------------------------------------- Part 3
def test_head_attribution_tracks_activation_patching_on_ioi(ref, ioi_model, ioi_run):
    """Part 3: 'a correlation above 0.95 between attribution and exact patching over all heads at all positions, and
    the largest cell of both in the same place: a layer-1 head at END'."""
    r = ioi_run
    attr = ref.attr_heads_by_pos(r["base"], r["source"], r["grads"], 2)
    exact = ref.act_patch_heads_by_pos(ioi_model, r["clean"], r["corrupted"], *r["args"])
    corr = ref.pearson_correlation(attr, exact)
    assert corr > 0.95, f"correlation over heads x positions {corr:.3f}"
    top_attr = tuple(int(i) for i in torch.unravel_index(attr.abs().argmax(), attr.shape))
    top_exact = tuple(int(i) for i in torch.unravel_index(exact.abs().argmax(), exact.shape))
    end = int(r["data"].word_idx["end"][0])
    assert top_attr == top_exact, f"largest cells differ: attribution {top_attr}, exact {top_exact}"
    assert top_exact[0] == 1 and top_exact[1] == end, f"largest cell {top_exact} is not a layer-1 head at END ({end})"


# ------------------------------------------------------------------------------------------- Part 4
def test_attribution_ranks_the_chapter_2_heads_first(ref, ind_model, rep_run):
    """Part 4: 'the heads with the three most negative attributions be exactly the layer-0 head with the highest
    previous-token score and the layer-1 heads whose induction score is at least 0.4'. The heads are identified by
    their attention, as chapter 2 does, not by index."""
    r, n = rep_run, rep_run["n"]
    with torch.no_grad():
        _, cache = ind_model.run_with_cache(r["clean"])
    prev = cache["pattern", 0].diagonal(-1, dim1=-2, dim2=-1).mean((0, -1))
    ind = cache["pattern", 1].diagonal(1 - n, dim1=-2, dim2=-1)[..., 2:].mean((0, -1))
    known = {(0, int(prev.argmax()))} | {(1, h) for h in range(4) if ind[h] >= 0.4}
    assert len(known) == 3, f"expected one previous-token head and two induction heads by score; got {known}"
    attr = ref.induction_head_attribution(ind_model, r["clean"], r["corrupted"])
    top = {divmod(int(i), 4) for i in attr.flatten().argsort()[:3]}
    assert top == known, f"three most negative attributions {sorted(top)}; heads by score {sorted(known)}"


def test_attribution_underestimates_the_induction_effects(ref, ind_model, rep_run):
    """Part 4: 'Attribution ranks the heads right, but look at the sizes: the scatter is far from the diagonal'."""
    r = rep_run
    attr = ref.attr_heads_by_pos(r["base"], r["source"], r["grads"], 2)
    exact = ref.induction_patch_by_pos(ind_model, r["clean"], r["corrupted"], "z")
    assert ref.relative_error(attr, exact) > 0.5
    assert attr.abs().sum() < exact.abs().sum()


# ------------------------------------------------------------------------------------------- Part 5
def test_qk_fix_lowers_the_error_of_key_attributions_on_ioi(ref, ioi_model, ioi_run):
    """Part 5: 'the QK fix lower the relative error for the keys on IOI'."""
    r = ioi_run
    exact = ref.act_patch_heads_by_pos(ioi_model, r["clean"], r["corrupted"], *r["args"], "k")
    plain = ref.relative_error(ref.attr_heads_by_pos(r["base"], r["source"], r["grads"], 2, "k"), exact)
    fixed = ref.relative_error(ref.qk_fix_keys(r["base"], r["source"], r["grads"], 2, ioi_model.cfg.d_head ** 0.5), exact)
    assert fixed < plain, f"relative error of key attributions: AtP {plain:.3f}, QK fix {fixed:.3f}"


def test_qk_fix_lowers_the_error_of_query_attributions_on_induction(ref, ind_model, rep_run):
    """Part 5: '... and for the queries on the induction task'."""
    r = rep_run
    exact = ref.induction_patch_by_pos(ind_model, r["clean"], r["corrupted"], "q")
    plain = ref.relative_error(ref.attr_heads_by_pos(r["base"], r["source"], r["grads"], 2, "q"), exact)
    fixed = ref.relative_error(ref.qk_fix_queries(r["base"], r["source"], r["grads"], 2, ind_model.cfg.d_head ** 0.5), exact)
    assert fixed < plain - 0.1, f"relative error of query attributions: AtP {plain:.3f}, QK fix {fixed:.3f}"
