"""VAR and its multi-scale residual tokenizer: one code path from tokens to pixels, prefix decoding, the shared
codebook's EMA, the block-causal mask, KV-cache sampling, guidance, editing, the frozen tokenizer copy, training."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import config
from pipeline import data, settings
import models.var as var_module
from models.var import VAR
from models.vqvae import VQVAE

V = 8  # codebook size of the stand-alone VARs below


# --- helpers and fixtures ----------------------------------------------------------------------------------------

def tiny_var_vqvae(*overrides):
    """The `tiny_var` preset's tokenizer: scales 1, 2, 3, 4 (30 tokens), one shared codebook of 32, code_dim 4."""
    cfg = settings.build_config("tiny_var", list(overrides))
    torch.manual_seed(0)
    return VQVAE(cfg.vqvae)


@pytest.fixture(scope="module")
def mnist_x():
    """128 real MNIST training digits in [-1, 1]."""
    images, _ = data.load_split(settings.build_config("tiny_var").data, train=True)
    return data.to_model_range(images[:128])


@pytest.fixture(scope="module")
def trained_tokenizer(mnist_x):
    """A tiny_var VQ-VAE after 60 Adam steps on real digits (codebook initialised and moved by the EMA), in eval."""
    model = tiny_var_vqvae()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for step in range(60):
        x = mnist_x[(step * 32) % 128:(step * 32) % 128 + 32]
        recon, _, loss_q, _ = model(x)
        loss = F.mse_loss(recon, x) + model.cfg.commitment_weight * loss_q
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def make_var(scales=(1, 2, 3), n_layer=2, live_ada=True, seed=0):
    """A stand-alone VAR over a random (untrained) tokenizer copy: V = 8 codes of dimension 4.

    live_ada: adaLN-Zero starts every block as the identity (zero gates), so attention would not mix positions at
    all; tests of the mask, the cache and guidance need blocks that do something, so the adaLN weights get noise."""
    cfg = config.VARConfig(n_layer=n_layer, n_head=2, d_model=32, mlp_ratio=2, dropout=0.0)
    torch.manual_seed(seed)
    model = VAR(cfg, scales, V, 4)
    if live_ada:
        with torch.no_grad():
            for ada in [block.ada for block in model.blocks] + [model.ada_f]:
                nn.init.normal_(ada[-1].weight, std=0.3)
                nn.init.normal_(ada[-1].bias, std=0.3)
    return model.eval()


def random_batch(model, B=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.V, (B, model.L), generator=g), torch.randint(0, 10, (B,), generator=g)


def scale_slices(scales):
    out, start = [], 0
    for s in scales:
        out.append(slice(start, start + s * s))
        start += s * s
    return out


def seeded(seed):
    return torch.Generator().manual_seed(seed)


# --- the multi-scale tokenizer -----------------------------------------------------------------------------------

def test_decode_of_encode_equals_the_training_reconstruction(trained_tokenizer, mnist_x):
    model = trained_tokenizer
    assert model.multiscale and model.quantizer.codebook.initialized
    x = mnist_x[:8]
    recon, idx_train, _, perplexity = model(x)  # the training forward pass, in eval mode (no EMA update)
    idx = model.encode(x)
    assert [tuple(i.shape) for i in idx] == [(8, 1, 1), (8, 2, 2), (8, 3, 3), (8, 4, 4)]
    assert all(torch.equal(a, b) for a, b in zip(idx, idx_train)) and len(idx_train) == 4
    assert perplexity.shape == (4,)
    assert torch.allclose(model.decode(idx), recon, atol=1e-5)


def test_lookup_of_quantize_equals_the_straight_through_f_hat(trained_tokenizer, mnist_x):
    q = trained_tokenizer.quantizer
    z = trained_tokenizer.encoder(mnist_x[:8])
    f_hat_st, idx_list, _, _ = q(z)
    assert torch.allclose(q.lookup(q.quantize(z)), f_hat_st, atol=1e-5)
    assert torch.allclose(q.lookup(idx_list), f_hat_st, atol=1e-5)
    assert not torch.allclose(f_hat_st, z, atol=1e-3)  # the quantized latent is not the encoder output itself


def test_training_forward_changes_nothing_in_eval_mode(trained_tokenizer, mnist_x):
    state = {k: v.clone() for k, v in trained_tokenizer.state_dict().items()}
    trained_tokenizer(mnist_x[:8])
    assert all(torch.equal(state[k], v) for k, v in trained_tokenizer.state_dict().items())


def test_every_prefix_of_the_scale_list_decodes_to_an_image_that_sharpens(trained_tokenizer, mnist_x):
    model = trained_tokenizer
    x = mnist_x[:32]
    idx = model.encode(x)
    errors = []
    for k in range(1, len(idx) + 1):
        image = model.decode(idx[:k])
        assert image.shape == (32, 1, 28, 28)
        errors.append(F.mse_loss(image, x).item())
    assert errors[-1] < errors[0]  # all four scales reconstruct better than the 1x1 map alone
    assert all(later <= earlier * 1.02 for earlier, later in zip(errors, errors[1:])), errors
    assert not torch.allclose(model.decode(idx[:1]), model.decode(idx), atol=1e-3)


def test_to_sequence_and_from_sequence(trained_tokenizer, mnist_x):
    model = trained_tokenizer
    idx = model.encode(mnist_x[:3])
    seq = model.to_sequence(idx)
    assert seq.shape == (3, 30) and model.sequence_length == 30
    for sl, idx_Bss in zip(scale_slices((1, 2, 3, 4)), idx):  # scales one after the other, each in raster order
        assert torch.equal(seq[:, sl], idx_Bss.reshape(3, -1))
    back = model.from_sequence(seq)
    assert len(back) == 4 and all(torch.equal(a, b) for a, b in zip(back, idx))
    assert torch.equal(model.encode_sequence(mnist_x[:3]), seq)
    for length, n_scales in [(1, 1), (5, 2), (14, 3), (7, 2), (29, 3)]:  # whole scales only
        prefix = model.from_sequence(seq[:, :length])
        assert len(prefix) == n_scales and all(torch.equal(a, b) for a, b in zip(prefix, idx))
    assert torch.equal(model.decode_sequence(seq[:, :5]), model.decode(idx[:2]))


def test_every_scale_feeds_the_one_shared_codebook_ema_each_vector_once():
    # no dead-code restarts (threshold 0), and a decay of 0.5 so this step's counts weigh as much as the init's 1s
    model = tiny_var_vqvae("vqvae.dead_code_threshold=0", "vqvae.ema_decay=0.5",
                           "vqvae.scale_weighting=vectors").train()
    codebook = model.quantizer.codebook
    assert codebook.K == 1 and not codebook.initialized
    B = 4
    _, idx_list, _, _ = model(torch.rand(B, 1, 28, 28) * 2 - 1)
    V = model.cfg.codebook_size
    all_idx = torch.cat([i.flatten() for i in idx_list])
    assert len(all_idx) == B * (1 + 4 + 9 + 16)
    expected = 0.5 * torch.ones(V) + 0.5 * torch.bincount(all_idx, minlength=V).float()  # init count 1, then EMA
    assert torch.allclose(codebook.ema_count_KV[0], expected, atol=1e-5)
    assert codebook.ema_count_KV.sum().item() == pytest.approx(0.5 * V + 0.5 * B * 30, rel=1e-5)


def test_scale_weighting_gives_every_scale_the_same_share_of_the_codebook_counts():
    model = tiny_var_vqvae("vqvae.dead_code_threshold=0", "vqvae.ema_decay=0.5").train()  # scales: the default
    codebook = model.quantizer.codebook
    B = 4
    _, idx_list, _, _ = model(torch.rand(B, 1, 28, 28) * 2 - 1)
    V, total = model.cfg.codebook_size, B * 30
    hits_V = sum(torch.bincount(i.flatten(), minlength=V).float() * total / (4 * i.numel()) for i in idx_list)
    assert torch.allclose(codebook.ema_count_KV[0], 0.5 + 0.5 * hits_V, atol=1e-4)
    # the 1x1 map's 4 vectors count as much as the 4x4 map's 64, and the total count per batch is unchanged
    assert hits_V.sum().item() == pytest.approx(total, rel=1e-5)


def test_scale_weighting_restarts_dead_codes_on_every_scale():
    """With scales weighted equally, a restarted code lands on a 1x1 vector about a quarter of the time (scales
    1..4); counting each vector once, 1 time in 30."""
    torch.manual_seed(0)
    quantizer = tiny_var_vqvae().quantizer
    sizes = [16 * s * s for s in (1, 2, 3, 4)]  # a batch of 16
    weight_N = quantizer._vector_weights([torch.zeros(n, dtype=torch.long) for n in sizes])[0]
    scale_N1 = torch.cat([torch.full((n, 1), float(k)) for k, n in enumerate(sizes)])  # each vector = its scale
    fresh_N1 = quantizer.codebook._random_rows(scale_N1, 4000, weight_N)
    share_of_1x1 = (fresh_N1.round() == 0).float().mean().item()
    assert share_of_1x1 == pytest.approx(0.25, abs=0.03)
    each_vector_once = tiny_var_vqvae("vqvae.scale_weighting=vectors").quantizer
    assert each_vector_once._vector_weights([torch.zeros(n) for n in sizes]) is None


# --- VAR: the block-causal mask ----------------------------------------------------------------------------------

def test_mask_is_block_causal_over_scales():
    model = make_var((1, 2, 3))
    mask = model.mask_LL
    assert mask.shape == (14, 14) and mask.dtype == torch.bool
    expected = torch.zeros(14, 14, dtype=torch.bool)
    expected[0, :1] = True      # the 1x1 start token sees itself
    expected[1:5, :5] = True    # the 2x2 scale sees scales 1x1 and 2x2
    expected[5:, :] = True      # the 3x3 scale sees everything
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("scales", [(1, 2, 3), (1, 2, 3, 4), (2, 3, 4)])
def test_changing_a_token_of_scale_k_changes_only_later_scales(scales):
    model = make_var(scales)
    tokens, classes = random_batch(model)
    slices = scale_slices(scales)
    base = model(tokens, classes)
    assert base.shape == (4, model.L, V)
    for k, sl in enumerate(slices):
        changed = tokens.clone()
        changed[:, sl.start] = (changed[:, sl.start] + 1) % V  # the first token of scale k
        logits = model(changed, classes)
        assert torch.allclose(logits[:, :sl.stop], base[:, :sl.stop], atol=1e-6), f"scale {k} leaked backwards"
        if k + 1 < len(scales):
            nxt = slices[k + 1]
            assert not torch.allclose(logits[:, nxt], base[:, nxt], atol=1e-4), f"scale {k + 1} ignores scale {k}"
        else:
            assert torch.allclose(logits, base, atol=1e-6)  # the finest scale is never an input


def test_without_the_mask_the_coarse_logits_would_see_finer_tokens():
    """The control for the test above: with full attention, a 1x1 token leaks into its own logits."""
    model = make_var((1, 2, 3))
    tokens, classes = random_batch(model)
    changed = tokens.clone()
    changed[:, 0] = (changed[:, 0] + 1) % V
    model.mask_LL = torch.ones_like(model.mask_LL)
    assert not torch.allclose(model(changed, classes)[:, 0], model(tokens, classes)[:, 0], atol=1e-4)


def test_loss_is_cross_entropy_of_the_teacher_forced_logits():
    model = make_var((1, 2, 3))
    tokens, classes = random_batch(model)
    expected = F.cross_entropy(model(tokens, classes).reshape(-1, V), tokens.reshape(-1))
    assert torch.allclose(model.loss(tokens, classes), expected)


# --- VAR: sampling -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("guidance", [1.0, 2.0])
@pytest.mark.parametrize("scales", [(1, 2, 3), (1, 2, 3, 4), (2, 3, 4), (1, 2, 3, 4, 5, 7)])
def test_kv_cache_sampling_equals_recomputing_every_scale(scales, guidance):
    model = make_var(scales)
    classes = torch.tensor([0, 3, 7, 10, 9, 1])  # one "no class" in the batch
    a = model.sample(classes, guidance=guidance, generator=seeded(5), use_cache=True)
    b = model.sample(classes, guidance=guidance, generator=seeded(5), use_cache=False)
    assert a.shape == (6, model.L) and a.dtype == torch.long
    assert a.min() >= 0 and a.max() < V
    assert torch.equal(a, b)


def record_sampling_logits(monkeypatch):
    """Every logits tensor VAR.sample draws from (after guidance), in order: one (B * s^2, V) per scale."""
    seen = []
    original = var_module.sample_from_logits

    def recording(logits, *args, **kwargs):
        seen.append(logits.clone())
        return original(logits, *args, **kwargs)

    monkeypatch.setattr(var_module, "sample_from_logits", recording)
    return seen


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_sampling_logits_equal_the_teacher_forced_logits_of_the_drawn_tokens(monkeypatch, use_cache, guidance):
    model = make_var((1, 2, 3, 4))
    classes = torch.tensor([2, 5, 8])
    seen = record_sampling_logits(monkeypatch)
    tokens = model.sample(classes, guidance=guidance, generator=seeded(0), use_cache=use_cache)
    assert len(seen) == 4  # one forward step per scale
    cond = model(tokens, classes)
    uncond = model(tokens, torch.full_like(classes, model.no_class))
    for k, (sl, logits) in enumerate(zip(scale_slices(model.scales), seen)):
        n = sl.stop - sl.start
        scale = 1 + (guidance - 1) * k / 3  # progressive guidance: 1 at the first scale, guidance at the last
        expected = uncond[:, sl] + scale * (cond[:, sl] - uncond[:, sl])
        assert torch.allclose(logits.view(3, n, V), expected, atol=1e-4), f"scale {k}"


def test_progressive_guidance_rises_from_plain_conditional_to_the_full_scale():
    model = make_var((1, 2, 3, 4, 5))
    assert [model.guidance_at(k, 3.0) for k in range(5)] == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert [model.guidance_at(k, 0.5) for k in range(5)][::4] == [1.0, 0.5]  # below 1 too (anti-guidance)
    model.progressive_guidance = False
    assert {model.guidance_at(k, 3.0) for k in range(5)} == {3.0}


def test_guidance_one_is_plain_conditional_sampling(monkeypatch):
    model = make_var((1, 2, 3))
    classes = torch.arange(8) % 10
    batches = []
    run = model._run
    monkeypatch.setattr(model, "_run", lambda x, *a, **k: batches.append(x.shape[0]) or run(x, *a, **k))
    plain = model.sample(classes, generator=seeded(2))
    scale_one = model.sample(classes, guidance=1.0, generator=seeded(2))
    assert torch.equal(plain, scale_one)
    assert set(batches) == {8}  # no unconditional copy in the batch
    greedy = model.sample(classes, top_k=1, guidance=1.0, generator=seeded(2))
    assert torch.equal(greedy, model(greedy, classes).argmax(-1))  # the conditional logits, not the unconditional


def test_all_no_class_batches_skip_guidance(monkeypatch):
    model = make_var((1, 2, 3))
    classes = torch.full((6,), model.no_class)
    batches = []
    run = model._run
    monkeypatch.setattr(model, "_run", lambda x, *a, **k: batches.append(x.shape[0]) or run(x, *a, **k))
    plain = model.sample(classes, generator=seeded(4))
    guided = model.sample(classes, guidance=3.0, generator=seeded(4))
    assert torch.equal(plain, guided)
    assert set(batches) == {6}
    batches.clear()
    model.sample(torch.tensor([1, 2, 10]), guidance=3.0, generator=seeded(4))  # one real class: guided
    assert set(batches) == {6}  # conditional and unconditional copies of 3 samples


def test_guided_greedy_sampling_follows_uncond_plus_scale_times_difference():
    model = make_var((1, 2, 3))
    with torch.no_grad():  # strong class information, so that guidance matters
        model.class_emb.weight.mul_(20)
    classes, scale = torch.arange(6), 3.0
    tokens = model.sample(classes, top_k=1, guidance=scale, generator=seeded(0))
    cond = model(tokens, classes)
    uncond = model(tokens, torch.full_like(classes, model.no_class))
    # progressive guidance: scale k of K guided by 1 + (scale - 1) * k / (K - 1)
    per_token_L = torch.cat([torch.full((s * s,), model.guidance_at(k, scale)) for k, s in enumerate(model.scales)])
    assert torch.equal(tokens, (uncond + per_token_L[:, None] * (cond - uncond)).argmax(-1))
    assert not torch.equal(tokens, model.sample(classes, top_k=1, generator=seeded(0)))  # guidance changed the draw


def test_sampling_depends_on_the_seed_and_top_k_1_does_not():
    model = make_var((1, 2, 3))
    classes = torch.arange(10)
    assert not torch.equal(model.sample(classes, generator=seeded(0)), model.sample(classes, generator=seeded(1)))
    greedy = model.sample(classes, top_k=1, temperature=1.7, generator=seeded(0))
    assert torch.equal(greedy, model.sample(classes, top_k=1, temperature=1.7, generator=seeded(1)))
    assert torch.equal(greedy, model(greedy, classes).argmax(-1))


# --- VAR: editing (known tokens) ---------------------------------------------------------------------------------

def editing_batch(model, B=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    known = torch.randint(0, V, (B, model.L), generator=g)
    keep = torch.rand(B, model.L, generator=g) < 0.5
    keep[0] = True   # a fully kept sample
    keep[1] = False  # a fully re-drawn one
    return known, keep, torch.randint(0, 10, (B,), generator=g)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_editing_keeps_every_known_token_at_every_scale(use_cache, guidance):
    model = make_var((1, 2, 3, 4))
    known, keep, classes = editing_batch(model)
    out = model.sample(classes, guidance=guidance, generator=seeded(0), use_cache=use_cache,
                       known_BL=known, known_mask_BL=keep)
    assert out.shape == known.shape
    for sl in scale_slices(model.scales):
        assert torch.equal(out[:, sl][keep[:, sl]], known[:, sl][keep[:, sl]])
    assert torch.equal(out[0], known[0])
    assert not torch.equal(out[~keep], known[~keep])  # the rest is drawn, not copied


def test_edited_tokens_are_drawn_given_the_kept_ones():
    """Kept tokens are teacher-forced: the next scales' inputs are built from them, not from the drawn tokens, so a
    greedy edit is the argmax of the teacher-forced logits of the edited sequence at every re-drawn position."""
    model = make_var((1, 2, 3, 4))
    known, keep, classes = editing_batch(model)
    out = model.sample(classes, top_k=1, generator=seeded(0), known_BL=known, known_mask_BL=keep)
    greedy = model(out, classes).argmax(-1)
    assert torch.equal(out[~keep], greedy[~keep])
    again = model.sample(classes, top_k=1, generator=seeded(9), known_BL=known, known_mask_BL=keep)
    assert torch.equal(out, again)  # top_k=1 is deterministic


# --- VAR: the frozen tokenizer copy ------------------------------------------------------------------------------

def test_from_tokenizer_copies_the_quantizer_and_freezes_it(trained_tokenizer):
    cfg = settings.build_config("tiny_var").var
    model = VAR.from_tokenizer(cfg, trained_tokenizer.token_info(), trained_tokenizer)
    assert model.scales == (1, 2, 3, 4) and model.L == 30 and model.V == 32 and model.code_dim == 4
    reference = trained_tokenizer.quantizer.state_dict()
    state = model.tokenizer.state_dict()
    assert set(state) == set(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    assert not any(p.requires_grad for p in model.tokenizer.parameters())
    assert any(p.requires_grad for p in model.parameters())
    with torch.no_grad():  # a copy, not shared storage
        model.tokenizer.codebook.codebook_KVD.add_(1.0)
    assert not torch.equal(model.tokenizer.codebook.codebook_KVD, reference["codebook.codebook_KVD"])


def test_a_training_step_leaves_the_tokenizer_copy_unchanged(trained_tokenizer, mnist_x):
    from transformer_train import make_optimizer
    cfg = settings.build_config("tiny_var")
    model = VAR.from_tokenizer(cfg.var, trained_tokenizer.token_info(), trained_tokenizer)
    model.train()
    assert model.training and model.blocks[0].training and not model.tokenizer.training
    assert not model.tokenizer.phis[0].training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = make_optimizer(model, cfg.var_train)
    tokens = trained_tokenizer.encode_sequence(mnist_x[:16])
    for _ in range(2):
        loss = model.loss(tokens, torch.arange(16) % 10)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not any(k.startswith("tokenizer.") for k in changed), sorted(changed)
    assert "word_proj.weight" in changed  # the inputs built from the tokenizer do train the projection
    assert all(p.grad is None for p in model.tokenizer.parameters())
    model.eval()
    assert not model.tokenizer.training and not model.training


# --- VAR: learning -----------------------------------------------------------------------------------------------

def test_a_few_hundred_adam_steps_lower_the_loss_clearly():
    model = make_var((1, 2, 3), n_layer=1, live_ada=False).train()
    g = torch.Generator().manual_seed(0)
    per_class = torch.randint(0, V, (10, model.L), generator=g)  # one fixed token map per digit
    classes = torch.arange(40) % 10
    tokens = per_class[classes]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    with torch.no_grad():
        first = model.loss(tokens, classes).item()
    for _ in range(200):
        loss = model.loss(tokens, classes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        last = model.loss(tokens, classes).item()
    assert first > 1.5  # about log(8) = 2.08 at the start
    assert last < 0.3 * first, (first, last)
