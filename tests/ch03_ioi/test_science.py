"""What chapter 3's prose says about the offline model ("If you are on the offline model, you should see ..."),
checked with the reference solutions on the notebook's own inputs. If `ioi_gpt2_2l` is retrained, these say which
sentence of the chapter became false. GPT-2 small's results are quoted from the paper; see test_gpt2_small.py."""

import pytest
import torch

from tests.harness import load_impl

# The notebook's settings: n_prompts = 8 one-template prompts, 32 mixed ones.
N_PROMPTS, N_MIXED = 8, 32


@pytest.fixture(scope="module")
def nb(model):
    """The notebook's batches and the results its prose describes, computed once with the reference solutions."""
    from micourse import ioi

    ref = load_impl("03_ioi", "solutions")
    torch.set_grad_enabled(False)
    try:
        tl = ioi.tl_prompt_data()
        mixed = ioi.make_ioi_data(N_MIXED, seed=1)
        data = ioi.make_ioi_data(N_PROMPTS, seed=0, templates=[0])
        abc = ioi.make_ioi_data(N_PROMPTS, seed=0, templates=[0], kind="abc")
        flipped = ref.corrupt_s2(data.tokens, data.word_idx["S2"], data.io_ids)
        m_args = (mixed.answer_ids, mixed.word_idx["end"])
        d_args = (data.answer_ids, data.word_idx["end"])
        L, H = model.cfg.n_layers, model.cfg.n_heads
        out = {"tl": tl, "mixed": mixed, "data": data, "abc": abc, "flipped": flipped, "L": L, "H": H}
        out["tl_ld"] = ref.logit_diff(model(tl.tokens), tl.answer_ids, tl.word_idx["end"])
        out["clean_ld"] = ref.logit_diff(model(data.tokens), *d_args).mean()
        out["flipped_ld"] = ref.logit_diff(model(flipped), *d_args).mean()
        out["abc_ld"] = ref.logit_diff(model(abc.tokens), *d_args).mean()
        out["lens"] = ref.logit_lens_logit_diff(model, mixed.tokens, *m_args)
        out["components"] = ref.dla_by_component(model, mixed.tokens, *m_args)
        out["heads"] = ref.dla_by_head(model, mixed.tokens, *m_args)
        out["top"] = divmod(int(out["heads"].argmax()), H)
        out["names"] = ref.dla_on_names(model, mixed.tokens, mixed.answer_ids, mixed.word_idx["end"])
        _, cache = model.run_with_cache(mixed.tokens)
        out["attn"] = {w: torch.stack([ref.attention_from_end(cache["pattern", layer], mixed.word_idx["end"], mixed.word_idx[w])
                                       for layer in range(L)]) for w in ("IO", "S1", "S2")}
        _, abc_cache = model.run_with_cache(abc.tokens)
        out["abc_attn_s2"] = torch.stack([ref.attention_from_end(abc_cache["pattern", layer], abc.word_idx["end"],
                                                                 abc.word_idx["S2"]) for layer in range(L)])
        out["resid"] = ref.patch_residual(model, data.tokens, flipped, *d_args)
        out["head_patch"] = ref.patch_head_outputs(model, data.tokens, flipped, *d_args)
        out["pattern_patch"] = ref.patch_head_activation(model, data.tokens, flipped, *d_args, "pattern")
        out["value_patch"] = ref.patch_head_activation(model, data.tokens, flipped, *d_args, "v")
        out["path_logits"] = ref.path_patch_to_logits(model, data.tokens, abc.tokens, *d_args)
        out["path_heads"] = {inp: ref.path_patch_to_heads(model, data.tokens, abc.tokens, *d_args, [out["top"]], inp,
                                                          data.word_idx["end"] if inp == "q" else None) for inp in "qkv"}
        name_ids = torch.tensor([model.to_single_token(" " + name) for name in ioi.NAMES])
        gen = torch.Generator().manual_seed(0)
        block = torch.stack([name_ids[torch.randperm(len(name_ids), generator=gen)[:10]] for _ in range(16)])
        rep = torch.cat([torch.full((16, 1), model.tokenizer.bos_token_id), block, block], dim=1)
        _, rep_cache = model.run_with_cache(rep)
        per_layer = [ref.repeated_token_head_scores(rep_cache["pattern", layer]) for layer in range(L)]
        out["rep"] = {kind: torch.stack([s[kind] for s in per_layer]) for kind in per_layer[0]}
        out["copy"] = torch.tensor([[ref.ov_copy_score(model, layer, h, name_ids) for h in range(H)] for layer in range(L)])
        out["neg_copy"] = torch.tensor([[ref.ov_copy_score(model, layer, h, name_ids, negative=True) for h in range(H)]
                                        for layer in range(L)])
        mean_ld = ref.logit_diff(model(mixed.tokens), *m_args).mean().item()
        scores = {"dla": out["heads"], "attn_io": out["attn"]["IO"], "attn_s1": out["attn"]["S1"], "attn_s2": out["attn"]["S2"],
                  **out["rep"]}
        out["classes"] = ref.classify_heads(scores, dla_threshold=0.1 * mean_ld)
        means = ref.mean_head_activations(model, abc.tokens)
        out["ablated"] = torch.tensor([[ref.mean_ablate_heads(model, data.tokens, *d_args, means, [(layer, h)]).mean()
                                        for h in range(H)] for layer in range(L)])
        found = sorted({head for heads in out["classes"].values() for head in heads})
        out["found"] = found
        out["faith_found"] = ref.circuit_faithfulness(model, data.tokens, abc.tokens, *d_args, found)
        out["faith_none"] = ref.circuit_faithfulness(model, data.tokens, abc.tokens, *d_args, [])
        before = ref.dla_by_head(model, data.tokens, *d_args)
        after = ref.dla_after_ablation(model, data.tokens, *d_args, means, [out["top"]])
        out["backup_change"] = after - before
        out["backup_ld"] = ref.mean_ablate_heads(model, data.tokens, *d_args, means, [out["top"]]).mean()
        layer, head = out["top"]

        def ablate(z, hook):
            z[:, :, head] = means[layer][: z.shape[1], head]
            return z
        with model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_z", ablate)]):
            out["components_without_top"] = ref.dla_by_component(model, data.tokens, *d_args)
        out["components_data"] = ref.dla_by_component(model, data.tokens, *d_args)
    finally:
        torch.set_grad_enabled(True)
    return out


def _name(head):
    return f"L{head[0]}H{head[1]}"


# ------------------------------------------------------------------------------------------- the data
def test_abba_and_baba_alternate_inside_one_batch_and_only_the_first_two_names_move(nb):
    d = nb["data"]
    assert d.orders == ["ABBA", "BABA"] * (len(d) // 2), f"the prose says the orders alternate: {d.orders}"
    first_name = torch.minimum(d.word_idx["IO"], d.word_idx["S1"])
    assert (d.word_idx["IO"] == first_name).tolist() == [o == "ABBA" for o in d.orders], "IO comes first in ABBA prompts"
    for key in ("S2", "end"):
        assert len(set(d.word_idx[key].tolist())) == 1, f"{key} should be at one position in every prompt of `data`"


# ------------------------------------------------------------------------------------------- Part 1
def test_offline_model_gets_every_tl_prompt_right_with_a_larger_margin_than_gpt2(nb):
    assert (nb["tl_ld"] > 0).all(), f"the prose says every TL prompt is positive: {nb['tl_ld'].tolist()}"
    assert nb["tl_ld"].mean() > 3.55, "the prose says the offline model's mean is above GPT-2 small's 3.55"


def test_flipped_prompts_are_negative_and_abc_prompts_near_zero(nb):
    clean, flipped, abc = nb["clean_ld"].item(), nb["flipped_ld"].item(), nb["abc_ld"].item()
    assert flipped < -0.5 * clean, f"flipped mean {flipped:.2f} should be clearly negative (clean {clean:.2f})"
    assert abs(abc) < 0.1 * clean, f"ABC mean {abc:.2f} should be close to 0 (clean {clean:.2f})"


# ------------------------------------------------------------------------------------------- Part 2
def test_logit_lens_is_flat_until_the_last_attention_layer(nb):
    lens, L = nb["lens"], nb["L"]
    final, last_mid = lens[-1].item(), lens[2 * L - 1].item()
    assert (lens[: 2 * L - 1].abs() < 0.05 * final).all(), f"the lens should be ~0 before {L - 1}_mid: {lens.tolist()}"
    assert last_mid > 0.1 * final, f"{L - 1}_mid should be the first point above 0: {lens.tolist()}"
    assert final > last_mid, "the last MLP should add to the logit difference"


def test_last_layer_writes_nearly_everything_and_its_mlp_most(nb):
    c, L = nb["components"], nb["L"]
    total = c.sum()
    attn_last, mlp_last = c[2 + 2 * (L - 1)], c[3 + 2 * (L - 1)]
    assert attn_last + mlp_last > 0.9 * total, f"last layer should carry nearly everything: {c.tolist()}"
    assert mlp_last > attn_last, f"the last MLP should write more than the last attention layer: {c.tolist()}"
    assert (c[: 2 + 2 * (L - 1)].abs() < 0.05 * total).all(), f"embeddings and earlier layers should write almost nothing: {c.tolist()}"


def test_one_last_layer_head_carries_the_attention_attribution(nb):
    heads, top, L = nb["heads"], nb["top"], nb["L"]
    assert top[0] == L - 1, f"the top head {_name(top)} should be in the last layer"
    attn_last = nb["components"][2 + 2 * (L - 1)]
    assert heads[top] > 0.8 * attn_last, f"{_name(top)} should carry almost all of the last attention layer's attribution"
    others = heads.clone()
    others[top] = 0
    assert (others.abs() < 0.1 * heads[top]).all(), f"every other head should be near 0: {heads.tolist()}"


def test_top_head_lowers_s_rather_than_raising_io(nb):
    io, s = nb["names"][nb["top"]].tolist()
    assert s < 0 and abs(s) > 2 * abs(io), f"{_name(nb['top'])}: IO {io:+.2f}, S {s:+.2f}; the prose says it suppresses S"


# ------------------------------------------------------------------------------------------- Part 3
def test_top_head_attends_to_s2_and_no_head_singles_out_io(nb):
    attn, top = nb["attn"], nb["top"]
    assert attn["S2"][top] > 0.5, f"{_name(top)} should attend from END to S2 (got {attn['S2'][top]:.2f})"
    assert ((attn["IO"] - attn["S1"]).abs() < 0.1).all(), "no head should attend to IO much more than to S1"


def test_top_head_finds_s2_by_position(nb):
    top = nb["top"]
    assert nb["abc_attn_s2"][top] > 0.5, (f"on ABC prompts {_name(top)} should still attend to the S2 position "
                                          f"(got {nb['abc_attn_s2'][top]:.2f})")


# ------------------------------------------------------------------------------------------- Part 4
def test_residual_information_stays_at_s2_until_the_last_layer(nb):
    resid, d = nb["resid"], nb["data"]
    s2, end = int(d.word_idx["S2"][0]), int(d.word_idx["end"][0])
    want0 = torch.zeros(resid.shape[1])
    want0[s2] = 1.0
    assert torch.allclose(resid[0], want0, atol=1e-4), f"before layer 0 only S2 should restore (exactly 1): {resid[0].tolist()}"
    assert (resid[:, s2] > 0.9).all(), f"S2 should stay red (near 1) in every layer: {resid[:, s2].tolist()}"
    assert (resid[:, end].abs() < 0.1).all(), f"END should stay white (near 0): {resid[:, end].tolist()}"


def test_top_head_alone_restores_nearly_everything(nb):
    assert nb["head_patch"][nb["top"]] > 0.9, f"restoring {_name(nb['top'])} should restore nearly all: {nb['head_patch'].tolist()}"


def test_patterns_do_nothing_values_restore_the_top_head(nb):
    assert (nb["pattern_patch"].abs() < 0.1).all(), f"restoring patterns should do nothing: {nb['pattern_patch'].tolist()}"
    assert nb["value_patch"][nb["top"]] > 0.9, f"restoring {_name(nb['top'])}'s values should restore nearly all"


# ------------------------------------------------------------------------------------------- Part 5
def test_one_head_near_minus_one_in_path_patching_to_logits(nb):
    p, top = nb["path_logits"], nb["top"]
    assert p[top] < -0.8, f"{_name(top)} should be near -1: {p.tolist()}"
    others = p.clone()
    others[top] = 0
    assert (others > -0.2).all(), f"no other head should come close: {p.tolist()}"


def test_layer0_heads_reach_the_top_head_through_its_values(nb):
    q, k, v = (nb["path_heads"][inp].abs().max().item() for inp in "qkv")
    assert v > 3 * max(q, k), f"values should matter far more than queries and keys: max |q| {q:.3f}, |k| {k:.3f}, |v| {v:.3f}"


# ------------------------------------------------------------------------------------------- Part 6
def test_no_previous_duplicate_or_induction_heads(nb):
    for kind, scores in nb["rep"].items():
        assert (scores < 0.4).all(), f"no head should score 0.4 on {kind}: {scores.tolist()}"


def test_copy_scores(nb):
    top, attn = nb["top"], nb["attn"]
    assert nb["neg_copy"][top] >= 0.9, f"{_name(top)}'s negative copy score should be close to 1"
    readers = (attn["IO"] >= 0.15) & (attn["S1"] >= 0.15)
    assert readers.any(), "some heads should attend to both names"
    assert (nb["copy"][readers] > nb["neg_copy"][readers]).all(), "heads reading both names should copy rather than suppress"
    strongest = divmod(int((attn["IO"] + attn["S1"]).argmax()), nb["H"])
    assert nb["copy"][strongest] >= 0.5, f"the head reading the names most ({_name(strongest)}) should copy clearly"


def test_classification_finds_one_negative_s_mover(nb):
    classes, top = nb["classes"], nb["top"]
    assert classes["negative S mover"] == [top], f"the negative S movers should be exactly [{_name(top)}]: {classes}"
    for kind, heads in classes.items():
        if kind != "negative S mover":
            assert heads == [], f"class {kind!r} should be empty on the offline model: {heads}"


# ------------------------------------------------------------------------------------------- Part 7
def test_single_head_ablations(nb):
    change = nb["ablated"] - nb["clean_ld"]
    top, clean = nb["top"], nb["clean_ld"].item()
    assert nb["ablated"][top] < 0.1 * clean, "ablating the top head should take the logit difference to about 0"
    others = change.clone()
    others[top] = 0
    assert (others.abs() < 0.3 * clean).all(), f"other ablations should change it little: {change.tolist()}"
    assert (others > 0).any(), "the prose says some ablations even raise it"


def test_faithfulness(nb):
    assert nb["found"] == [nb["top"]], f"the classified heads should be the top head alone: {nb['found']}"
    assert 0.9 <= nb["faith_found"] <= 1.2, f"the one-head circuit should recover about all: {nb['faith_found']:.2f}"
    assert nb["faith_none"] < 0.3, f"no heads should recover little: {nb['faith_none']:.2f}"


def test_no_backup_and_the_mlp_depends_on_the_top_head(nb):
    clean = nb["clean_ld"].item()
    assert nb["backup_ld"] < 0.1 * clean, f"ablating the top head should leave about 0 (got {nb['backup_ld']:.2f})"
    change = nb["backup_change"].clone()
    change[nb["top"]] = 0
    assert (change.abs() < 0.05 * clean).all(), f"no other head should change by more than a small fraction: {change.tolist()}"
    L = nb["L"]
    mlp_clean, mlp_ablated = nb["components_data"][3 + 2 * (L - 1)], nb["components_without_top"][3 + 2 * (L - 1)]
    assert mlp_ablated < 0.2 * mlp_clean, f"the last MLP's contribution should vanish with the top head: {mlp_clean:.2f} -> {mlp_ablated:.2f}"
