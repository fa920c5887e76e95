"""MultiCodebookQuantizer: indices, shapes, straight-through gradients, nearest-code lookup, EMA and restarts."""
import torch

from models.quantizer import MultiCodebookQuantizer


def make_quantizer(K=2, V=8, D=3, **kwargs):
    torch.manual_seed(0)
    return MultiCodebookQuantizer(K, V, D, **kwargs)


def test_quantize_gives_one_index_per_codebook_in_range():
    q = make_quantizer(K=2, V=8, D=3).eval()
    z = torch.randn(5, 2 * 3, 4, 3)
    idx = q.quantize(z)
    assert idx.shape == (5, 4, 3, 2)
    assert idx.dtype == torch.long
    assert idx.min() >= 0 and idx.max() < 8


def test_forward_shapes_and_outputs_in_eval_mode():
    q = make_quantizer(K=3, V=5, D=2).eval()
    z = torch.randn(2, 6, 3, 3)
    q_st, idx, commitment, perplexity = q(z)
    assert q_st.shape == z.shape
    assert idx.shape == (2, 3, 3, 3)
    assert commitment.dim() == 0 and commitment >= 0
    assert perplexity.shape == (3,)
    assert torch.all(perplexity >= 1) and torch.all(perplexity <= 5 + 1e-4)


def test_lookup_of_quantize_is_the_nearest_code_by_brute_force():
    q = make_quantizer(K=2, V=8, D=3).eval()
    z = torch.randn(4, 6, 2, 2)
    idx = q.quantize(z)
    q_BCHW = q.lookup(idx)
    for k in range(2):
        z_k = z[:, 3 * k:3 * (k + 1)].permute(0, 2, 3, 1).reshape(-1, 3)   # (N, D) vectors of chunk k
        dist = torch.cdist(z_k, q.codebook_KVD[k])                       # (N, V)
        best = dist.argmin(1)
        assert torch.equal(idx[..., k].reshape(-1), best)
        q_k = q_BCHW[:, 3 * k:3 * (k + 1)].permute(0, 2, 3, 1).reshape(-1, 3)
        assert torch.allclose(q_k, q.codebook_KVD[k][best])


def test_eval_forward_output_equals_lookup_of_indices():
    q = make_quantizer(K=2, V=8, D=3).eval()
    z = torch.randn(3, 6, 2, 2)
    q_st, idx, _, _ = q(z)
    assert torch.equal(idx, q.quantize(z))
    assert torch.allclose(q_st, q.lookup(idx), atol=1e-6)


def test_straight_through_gradient_reaches_encoder_unchanged():
    q = make_quantizer(K=2, V=8, D=3).eval()
    z = torch.randn(2, 6, 3, 3, requires_grad=True)
    upstream = torch.randn(2, 6, 3, 3)
    q_st, _, _, _ = q(z)
    (q_st * upstream).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert torch.allclose(z.grad, upstream)


def test_commitment_loss_gradient_pulls_z_toward_its_code():
    q = make_quantizer(K=1, V=4, D=2).eval()
    z = torch.randn(1, 2, 2, 2, requires_grad=True)
    _, idx, commitment, _ = q(z)
    commitment.backward()
    target = q.lookup(idx)
    assert torch.allclose(z.grad, 2 * (z - target).detach() / z.numel(), atol=1e-6)


def test_ema_moves_assigned_codes_toward_their_vectors_in_train_mode():
    decay = 0.8
    q = make_quantizer(K=1, V=4, D=2, ema_decay=decay, dead_code_threshold=0.0).train()
    q.initialized.fill_(True)  # keep our codebook (no init from data)
    codes = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]])
    q.codebook_KVD.copy_(codes)
    q.ema_sum_KVD.copy_(codes)
    q.ema_count_KV.fill_(1.0)
    # two vectors near code 0, one near code 1; codes 2 and 3 get nothing
    vectors = torch.tensor([[1.0, 1.0], [1.0, 0.0], [9.0, 1.0]])
    z = vectors.t().reshape(1, 2, 1, 3)
    _, idx, _, _ = q(z)
    assert idx.flatten().tolist() == [0, 0, 1]
    new = q.codebook_KVD[0]
    # exact EMA (up to Laplace smoothing): code = (d * old_sum + (1-d) * new_sum) / (d * old_count + (1-d) * n)
    expected0 = (decay * codes[0, 0] + (1 - decay) * (vectors[0] + vectors[1])) / (decay + (1 - decay) * 2)
    expected1 = (decay * codes[0, 1] + (1 - decay) * vectors[2]) / (decay + (1 - decay) * 1)
    assert torch.allclose(new[0], expected0, atol=1e-3)
    assert torch.allclose(new[1], expected1, atol=1e-3)
    assert torch.allclose(q.ema_count_KV[0], torch.tensor([decay + (1 - decay) * 2, 1.0, decay, decay]))
    for v in (0, 1):
        assigned_mean = vectors[idx.flatten() == v].mean(0)
        assert (new[v] - assigned_mean).norm() < (codes[0, v] - assigned_mean).norm()
    assert torch.allclose(new[2:], codes[0, 2:], atol=1e-3)  # unassigned codes stay put


def test_eval_mode_never_changes_codebooks_or_ema_state():
    q = make_quantizer(K=2, V=8, D=3).eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q(torch.randn(4, 6, 3, 3))
    for name, value in q.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not bool(q.initialized)


def test_first_training_forward_initialises_codebooks_from_encoder_outputs():
    q = make_quantizer(K=2, V=8, D=3).train()
    z = torch.randn(4, 6, 3, 3) + 50.0  # far from the N(0, 1) initial codebook
    q(z)
    assert bool(q.initialized)
    for k in range(2):
        z_k = z[:, 3 * k:3 * (k + 1)].permute(0, 2, 3, 1).reshape(-1, 3)
        nearest = torch.cdist(q.codebook_KVD[k], z_k).min(1).values
        assert torch.all(nearest < 0.1), nearest  # every code sits (almost) on some encoder output


def test_dead_codes_are_restarted_on_encoder_outputs():
    q = make_quantizer(K=1, V=6, D=2, ema_decay=0.99, dead_code_threshold=1.0).train()
    q.initialized.fill_(True)
    codes = torch.arange(12, dtype=torch.float32).reshape(1, 6, 2) * 0.1
    q.codebook_KVD.copy_(codes)
    q.ema_count_KV.fill_(1000.0)   # all alive ...
    q.ema_sum_KVD.copy_(codes * 1000.0)
    dead = torch.tensor([False, False, False, False, True, True])
    q.ema_count_KV[0, dead] = 0.0   # ... except codes 4 and 5
    q.ema_sum_KVD[0, dead] = 0.0
    z = 0.1 * torch.randn(1, 2, 4, 4) - 5.0  # all nearest to code 0 = (0, 0), far from the dead codes 4, 5
    _, idx, _, _ = q(z)
    assert torch.all(idx == 0)
    z_ND = z.permute(0, 2, 3, 1).reshape(-1, 2)
    restarted = q.codebook_KVD[0, dead]
    assert not torch.allclose(restarted, codes[0, dead])
    assert torch.all(torch.cdist(restarted, z_ND).min(1).values < 0.1)  # moved onto encoder outputs
    assert torch.all(q.ema_count_KV[0, dead] == 1.0)
    # alive codes with no assignment this batch keep (almost) their place
    alive_unused = ~dead & (torch.arange(6) != 0)
    assert torch.allclose(q.codebook_KVD[0, alive_unused], codes[0, alive_unused], atol=1e-3)


def test_perplexity_counts_codes_used_evenly():
    q = make_quantizer(K=2, V=4, D=1)
    # codebook 0 uses all 4 codes once each, codebook 1 uses code 2 only
    idx = torch.stack([torch.tensor([0, 1, 2, 3]), torch.tensor([2, 2, 2, 2])], dim=-1).reshape(1, 2, 2, 2)
    perplexity = q.perplexity(idx)
    assert torch.allclose(perplexity, torch.tensor([4.0, 1.0]), atol=1e-4)


def test_quantize_under_autocast_gives_the_float32_tokens():
    q = make_quantizer(K=1, V=256, D=16).eval()
    z = torch.randn(64, 16, 4, 4)
    expected = q.quantize(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what vqvae_train does on CUDA (amp=auto -> bf16)
        assert torch.equal(q.quantize(z), expected)
