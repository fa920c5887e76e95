"""Raster GPT: sequence layout, causality, class conditioning, KV cache == full forward, and sampling."""
import pytest
import torch

from models.gpt import GPT
from models.prior import sample_from_logits
from pipeline import settings

V = 8


def tiny_gpt(grid_shape=(2, 3, 2), n_layer=2):
    cfg = settings.build_config("tiny", [f"gpt.n_layer={n_layer}"]).gpt
    torch.manual_seed(0)
    return GPT(cfg, grid_shape, V).eval()


def random_batch(model, B=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, model.L), generator=g), torch.randint(0, 10, (B,), generator=g)


def test_sequence_layout_matches_position_buffers():
    model = tiny_gpt((2, 3, 2))
    H, W, K = model.grid_shape
    idx = torch.arange(H * W * K).reshape(1, H, W, K)
    seq = idx.reshape(1, -1)  # the tokenizer's layout (VQVAE.to_sequence): row-major, codebook innermost
    assert seq.shape == (1, model.L) and model.L == 12
    for s in range(model.L):
        r, c, k = model.row_L[s].item(), model.col_L[s].item(), model.book_L[s].item()
        assert idx[0, r, c, k] == seq[0, s]


def test_each_position_reads_the_logits_of_its_own_codebook():
    model = tiny_gpt((2, 2, 2))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.arange(2 * V, dtype=torch.float32))
    tokens, classes = random_batch(model)
    logits = model(tokens, classes)
    assert logits.shape == (3, model.L, V)
    for s in range(model.L):
        expected = torch.arange(V, dtype=torch.float32) + V * model.book_L[s]
        assert torch.equal(logits[0, s], expected)


@pytest.mark.parametrize("t", [0, 3, 6])
def test_changing_token_t_never_changes_logits_at_or_before_t(t):
    model = tiny_gpt((2, 2, 2))
    tokens, classes = random_batch(model)
    changed = tokens.clone()
    changed[:, t] = (changed[:, t] + 1) % V
    a, b = model(tokens, classes), model(changed, classes)
    assert torch.allclose(a[:, :t + 1], b[:, :t + 1], atol=1e-6)
    assert not torch.allclose(a[:, t + 1], b[:, t + 1], atol=1e-4)  # the next position does see it


def test_last_token_is_never_an_input():
    model = tiny_gpt((2, 2, 2))
    tokens, classes = random_batch(model)
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % V
    assert torch.allclose(model(tokens, classes), model(changed, classes), atol=1e-6)


def test_changing_the_class_changes_the_logits():
    model = tiny_gpt((2, 2, 2))
    tokens, classes = random_batch(model)
    other = (classes + 1) % 10
    a, b = model(tokens, classes), model(tokens, other)
    assert not torch.allclose(a[:, 0], b[:, 0], atol=1e-4)
    assert not torch.allclose(a[:, -1], b[:, -1], atol=1e-4)
    uncond = model(tokens, torch.full_like(classes, model.no_class))
    assert not torch.allclose(a, uncond, atol=1e-4)


def test_loss_is_cross_entropy_of_forward_logits():
    model = tiny_gpt((2, 2, 1))
    tokens, classes = random_batch(model)
    expected = torch.nn.functional.cross_entropy(model(tokens, classes).reshape(-1, V), tokens.reshape(-1))
    assert torch.allclose(model.loss(tokens, classes), expected)


@pytest.mark.parametrize("grid_shape", [(2, 2, 1), (3, 3, 1), (2, 2, 2), (2, 3, 2)])
def test_kv_cache_one_token_at_a_time_equals_forward(grid_shape):
    model = tiny_gpt(grid_shape)
    tokens, classes = random_batch(model)
    full = model(tokens, classes)
    caches = model.new_cache()
    with torch.no_grad():
        stepped = [model.step_logits(classes, tokens[:, :0], caches, 0)]  # slot 0: the class
        for s in range(1, model.L):  # slot s holds token s-1 and predicts token s
            stepped.append(model.step_logits(classes, tokens[:, s - 1:s], caches, s))
    assert torch.allclose(torch.stack(stepped, 1), full, atol=1e-5)


def test_kv_cache_prompt_then_chunk_equals_forward():
    model = tiny_gpt((2, 3, 2))
    tokens, classes = random_batch(model)
    full = model(tokens, classes)
    caches = model.new_cache()
    with torch.no_grad():
        first = model.step_logits(classes, tokens[:, :2], caches, 0)    # slots 0..2: class, t0, t1 -> predicts t2
        chunk = model.step_logits(classes, tokens[:, 2:5], caches, 3)   # slots 3..5: t2, t3, t4 -> predicts t5
        nxt = model.step_logits(classes, tokens[:, 5:6], caches, 6)     # slot 6: t5 -> predicts t6
    assert torch.allclose(first, full[:, 2], atol=1e-5)
    assert torch.allclose(chunk, full[:, 5], atol=1e-5)
    assert torch.allclose(nxt, full[:, 6], atol=1e-5)


def test_step_logits_without_cache_equals_forward():
    model = tiny_gpt((2, 2, 2))
    tokens, classes = random_batch(model)
    full = model(tokens, classes)
    with torch.no_grad():
        for p in range(model.L):
            assert torch.allclose(model.step_logits(classes, tokens[:, :p], None, 0), full[:, p], atol=1e-5)


@pytest.mark.parametrize("grid_shape", [(2, 2, 1), (2, 3, 2)])
def test_sample_with_and_without_cache_are_identical(grid_shape):
    model = tiny_gpt(grid_shape)
    classes = torch.arange(6) % 10
    a = model.sample(classes, generator=torch.Generator().manual_seed(5), use_cache=True)
    b = model.sample(classes, generator=torch.Generator().manual_seed(5), use_cache=False)
    assert a.shape == (6, model.L)
    assert torch.equal(a, b)


def test_sampled_tokens_are_in_range_and_depend_on_the_seed():
    model = tiny_gpt((2, 3, 2))
    classes = torch.arange(20) % 10
    a = model.sample(classes, generator=torch.Generator().manual_seed(0))
    b = model.sample(classes, generator=torch.Generator().manual_seed(1))
    assert a.dtype == torch.long and a.shape == (20, model.L)
    assert a.min() >= 0 and a.max() < V
    assert not torch.equal(a, b)


def keep_prefix(model, prefix_BT):
    """known_BL / known_mask_BL that keep the first T tokens (the complete edit)."""
    B, T = prefix_BT.shape
    known = torch.zeros(B, model.L, dtype=torch.long)
    known[:, :T] = prefix_BT
    keep = torch.zeros(B, model.L, dtype=torch.bool)
    keep[:, :T] = True
    return {"known_BL": known, "known_mask_BL": keep}


@pytest.mark.parametrize("use_cache", [True, False])
def test_sample_keeps_the_prefix(use_cache):
    model = tiny_gpt((2, 3, 2))
    classes = torch.tensor([1, 7])
    prefix = torch.tensor([[3, 1, 4, 1, 5], [2, 7, 1, 6, 2]])
    out = model.sample(classes, **keep_prefix(model, prefix), use_cache=use_cache,
                       generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, model.L)
    assert torch.equal(out[:, :5], prefix)


def test_prefix_completion_with_and_without_cache_agree():
    model = tiny_gpt((2, 3, 2))
    classes = torch.tensor([1, 7])
    prefix = torch.tensor([[3, 1, 4], [2, 7, 1]])
    a = model.sample(classes, **keep_prefix(model, prefix), use_cache=True, generator=torch.Generator().manual_seed(3))
    b = model.sample(classes, **keep_prefix(model, prefix), use_cache=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_guidance_one_equals_plain_sampling():
    model = tiny_gpt((2, 2, 2))
    classes = torch.arange(8) % 10
    plain = model.sample(classes, generator=torch.Generator().manual_seed(2))
    guided = model.sample(classes, guidance=1.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(plain, guided)


def test_guidance_is_skipped_for_unconditional_draws():
    model = tiny_gpt((2, 2, 2))
    classes = torch.full((8,), model.no_class)
    plain = model.sample(classes, generator=torch.Generator().manual_seed(4))
    guided = model.sample(classes, guidance=3.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(plain, guided)  # uncond + s * (uncond - uncond) is the unconditional draw itself


@pytest.mark.parametrize("use_cache", [True, False])
def test_top_k_1_is_greedy(use_cache):
    model = tiny_gpt((2, 3, 2))
    classes = torch.arange(5)
    tokens = model.sample(classes, temperature=1.7, top_k=1, use_cache=use_cache,
                          generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, model(tokens, classes).argmax(-1))


def test_very_low_temperature_is_greedy():
    model = tiny_gpt((2, 2, 2))
    classes = torch.arange(5)
    tokens = model.sample(classes, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, model(tokens, classes).argmax(-1))


def test_guided_greedy_sampling_follows_uncond_plus_scale_times_difference():
    model = tiny_gpt((2, 2, 2))
    with torch.no_grad():  # make class information strong so that guidance matters
        model.class_emb.weight.mul_(50)
    classes, scale = torch.arange(4), 3.0
    tokens = model.sample(classes, top_k=1, guidance=scale, generator=torch.Generator().manual_seed(0))
    cond = model(tokens, classes)
    uncond = model(tokens, torch.full_like(classes, model.no_class))
    assert torch.equal(tokens, (uncond + scale * (cond - uncond)).argmax(-1))
    plain_greedy = model.sample(classes, top_k=1, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(tokens, plain_greedy)  # guidance did change the draw


def test_sample_from_logits_top_k_only_draws_from_the_k_best():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0, -2.0]]).repeat(500, 1)
    drawn = sample_from_logits(logits, temperature=5.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1, 3}


def test_sample_from_logits_temperature_flattens_the_distribution():
    logits = torch.tensor([[0.0, 2.0]]).repeat(4000, 1)
    cold = sample_from_logits(logits, temperature=0.5, generator=torch.Generator().manual_seed(0)).float().mean()
    hot = sample_from_logits(logits, temperature=4.0, generator=torch.Generator().manual_seed(0)).float().mean()
    # P(token 1) = sigmoid(2 / T): 0.982 at T=0.5, 0.622 at T=4
    assert abs(cold - 0.982) < 0.02 and abs(hot - 0.622) < 0.04


@pytest.mark.parametrize("filled", [1, 5, 12])
def test_one_query_attention_matches_sdpa_and_ignores_the_empty_slots(filled):
    """The sampling step's attention over the fixed-size cache equals SDPA on the filled slots, whatever the empty
    slots hold (they are zero in a real cache; here large values, which would show through a broken mask)."""
    import torch.nn.functional as F
    from models.transformer import one_query_attention
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 2, 1, 8, generator=g)
    k, v = torch.randn(3, 2, 12, 8, generator=g), torch.randn(3, 2, 12, 8, generator=g)
    expected = F.scaled_dot_product_attention(q, k[:, :, :filled], v[:, :, :filled])
    k[:, :, filled:], v[:, :, filled:] = 50.0, -50.0
    assert torch.allclose(one_query_attention(q, k, v, filled), expected, atol=1e-6)
