"""FiniteScalarQuantizer and ResidualQuantizer: the shared quantizer interface, agreement with vector-quantize-pytorch
(the oracle, where installed), straight-through gradients, float32 under autocast, and the residual EMA codebooks."""
import pytest
import torch
import torch.nn.functional as F

from models.fsq import FiniteScalarQuantizer
from models.residual_vq import ResidualQuantizer

FSQ_LEVELS = [(8, 5, 5, 5), (7, 5, 5, 5, 5), (4, 6, 3, 5)]  # the paper's 2^10 and 7*5^4 sets, an even/odd mix


def rows(t_BCHW):
    """(B, C, H, W) -> (B*H*W, C)."""
    return t_BCHW.permute(0, 2, 3, 1).reshape(-1, t_BCHW.shape[1])


def oracle_fsq(levels, num_codebooks=1):
    vqp = pytest.importorskip("vector_quantize_pytorch")
    # dim = K * len(levels): no projection layers. The paper's plain FSQ: no symmetry-preserving bound, no noise.
    return vqp.FSQ(levels=list(levels), dim=num_codebooks * len(levels), num_codebooks=num_codebooks,
                   keep_num_codebooks_dim=True, preserve_symmetry=False, noise_dropout=0.0)


def trained_residual(K=3, V=16, D=4, steps=20, ema_decay=0.9, seed=0):
    """A ResidualQuantizer after a few EMA steps on N(0, 1) latents (B=8, 4x4 grid)."""
    torch.manual_seed(seed)
    rq = ResidualQuantizer(K, V, D, ema_decay=ema_decay).train()
    for _ in range(steps):
        rq(torch.randn(8, D, 4, 4))
    return rq.eval()


# --- FSQ against the oracle -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("levels", FSQ_LEVELS)
def test_fsq_indices_values_and_gradients_match_vector_quantize_pytorch(levels):
    theirs = oracle_fsq(levels)
    ours = FiniteScalarQuantizer(1, levels)
    torch.manual_seed(0)
    z = 2.0 * torch.randn(4, len(levels), 5, 3)  # wide enough to reach the outer levels
    z_ours, z_theirs = z.clone().requires_grad_(), z.clone().requires_grad_()
    q_ours, idx_ours, _, _ = ours(z_ours)
    q_theirs, idx_theirs = theirs(z_theirs)
    assert torch.equal(idx_ours, idx_theirs.long())
    assert torch.equal(ours.quantize(z), idx_theirs.long())
    assert torch.allclose(q_ours, q_theirs, atol=1e-6)
    upstream = torch.randn_like(z)
    (q_ours * upstream).sum().backward()
    (q_theirs * upstream).sum().backward()
    assert torch.allclose(z_ours.grad, z_theirs.grad, atol=1e-6)


@pytest.mark.parametrize("levels", FSQ_LEVELS)
def test_fsq_implicit_codebook_matches_vector_quantize_pytorch(levels):
    theirs = oracle_fsq(levels)
    ours = FiniteScalarQuantizer(1, levels)
    assert ours.V == theirs.codebook_size
    codes_VD = rows(ours.lookup(torch.arange(ours.V).reshape(1, 1, -1, 1)))
    assert torch.allclose(codes_VD, theirs.implicit_codebook.float(), atol=1e-6)


def test_fsq_two_tokens_per_position_match_vector_quantize_pytorch_with_two_codebooks():
    levels = (8, 5, 5, 5)
    theirs = oracle_fsq(levels, num_codebooks=2)
    ours = FiniteScalarQuantizer(2, levels)
    z = 2.0 * torch.randn(3, 8, 4, 4)
    q_ours, idx_ours, _, _ = ours(z)
    q_theirs, idx_theirs = theirs(z)
    assert idx_ours.shape == idx_theirs.shape == (3, 4, 4, 2)
    assert torch.equal(idx_ours, idx_theirs.long())
    assert torch.allclose(q_ours, q_theirs, atol=1e-6)


# --- FSQ on its own -------------------------------------------------------------------------------------------------

def test_fsq_interface_and_shapes():
    q = FiniteScalarQuantizer(2, (8, 5, 5, 5))
    assert (q.K, q.V, q.latent_channels) == (2, 1000, 8)
    z = torch.randn(3, 8, 4, 2)
    q_st, idx, commitment, perplexity = q(z)
    assert q_st.shape == z.shape and q_st.dtype == torch.float32
    assert idx.shape == (3, 4, 2, 2) and idx.dtype == torch.long
    assert idx.min() >= 0 and idx.max() < 1000
    assert commitment.dim() == 0 and commitment == 0
    assert perplexity.shape == (2,) and torch.all(perplexity >= 1)


def test_fsq_has_no_state_to_save_and_loads_an_empty_state_dict():
    q = FiniteScalarQuantizer(1, (7, 5, 5, 5, 5))
    assert len(q.state_dict()) == 0 and len(list(q.parameters())) == 0
    q.load_state_dict({})  # strict: nothing missing, nothing unexpected


def test_fsq_levels_below_three_are_refused():
    with pytest.raises(AssertionError):
        FiniteScalarQuantizer(1, (2, 5, 5))


def test_fsq_lookup_of_quantize_is_the_forward_output():
    q = FiniteScalarQuantizer(2, (4, 6, 3, 5))
    z = 2.0 * torch.randn(4, 8, 3, 3)
    q_st, idx, _, _ = q(z)
    assert torch.equal(q.quantize(z), idx)
    assert torch.allclose(q.lookup(idx), q_st, atol=1e-6)


def test_fsq_codes_are_a_grid_in_minus_one_to_one_with_every_index_distinct():
    levels = (4, 6, 3, 5)
    q = FiniteScalarQuantizer(1, levels)
    codes_VD = rows(q.lookup(torch.arange(q.V).reshape(1, 1, -1, 1)))
    assert len(torch.unique(codes_VD, dim=0)) == q.V
    for d, L in enumerate(levels):
        expected = (torch.arange(L) - L // 2) / (L // 2)  # even L: [-1, 1 - 2/L]; odd L: [-1, 1]
        assert torch.equal(torch.unique(codes_VD[:, d]), expected)


def test_fsq_tokens_quantize_their_own_chunk_of_channels():
    levels = (8, 5, 5, 5)
    one, two = FiniteScalarQuantizer(1, levels), FiniteScalarQuantizer(2, levels)
    z = 2.0 * torch.randn(3, 8, 2, 2)
    idx = two.quantize(z)
    for k in range(2):
        assert torch.equal(idx[..., k:k + 1], one.quantize(z[:, 4 * k:4 * (k + 1)]))


def test_fsq_straight_through_gradient_reaches_z():
    q = FiniteScalarQuantizer(1, (8, 5, 5, 5))
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    q_st, _, commitment, _ = q(z)
    (q_st.sum() + commitment).backward()
    assert torch.isfinite(z.grad).all() and torch.all(z.grad > 0)  # the bound is increasing in every channel


def same_tokens_in_float32_under_bfloat16_autocast(q, z):
    """A quantizer's forward and quantize under bf16 autocast: float32 outputs and the tokens of a float32 pass."""
    _, expected, _, _ = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q_st, idx, commitment, perplexity = q(z)
        assert torch.equal(q.quantize(z), expected)
    assert all(t.dtype == torch.float32 for t in (q_st, commitment, perplexity))
    assert torch.equal(idx, expected)


def test_fsq_under_bfloat16_autocast_is_float32_with_the_same_tokens():
    same_tokens_in_float32_under_bfloat16_autocast(FiniteScalarQuantizer(2, (7, 5, 5, 5, 5)),
                                                   2.0 * torch.randn(8, 10, 4, 4))


# --- residual VQ against the oracle ---------------------------------------------------------------------------------

def test_residual_matches_vector_quantize_pytorch_with_the_same_codebooks():
    vqp = pytest.importorskip("vector_quantize_pytorch")
    K, V, D = 3, 16, 4
    ours = trained_residual(K, V, D)
    theirs = vqp.ResidualVQ(dim=D, num_quantizers=K, codebook_size=V).eval()
    with torch.no_grad():
        for layer, stage in zip(theirs.layers, ours.stages):
            layer.codebook = stage.codebook_KVD[0]
    z = torch.randn(2, D, 4, 3)
    q_ours, idx_ours, _, _ = ours(z)
    q_BND, idx_BNK, _ = theirs(z.permute(0, 2, 3, 1).reshape(2, 12, D))  # channels last, positions flattened
    assert torch.equal(idx_ours, idx_BNK.reshape(2, 4, 3, K))
    assert torch.allclose(rows(q_ours), q_BND.reshape(-1, D), atol=1e-5)


# --- residual VQ on its own -----------------------------------------------------------------------------------------

def test_residual_interface_and_shapes():
    torch.manual_seed(0)
    rq = ResidualQuantizer(3, 8, 4).eval()
    assert (rq.K, rq.V, rq.latent_channels) == (3, 8, 4)
    z = torch.randn(2, 4, 3, 5)
    q_st, idx, commitment, perplexity = rq(z)
    assert q_st.shape == z.shape and q_st.dtype == torch.float32
    assert idx.shape == (2, 3, 5, 3) and idx.dtype == torch.long
    assert idx.min() >= 0 and idx.max() < 8
    assert commitment.dim() == 0 and commitment >= 0
    assert perplexity.shape == (3,) and torch.all(perplexity >= 1) and torch.all(perplexity <= 8 + 1e-4)


def test_residual_lookup_is_the_sum_of_each_stage_code_and_equals_the_forward_output():
    rq = trained_residual(K=3, V=8, D=4, steps=3)
    z = torch.randn(2, 4, 3, 3)
    q_st, idx, commitment, _ = rq(z)
    assert torch.equal(rq.quantize(z), idx)
    by_hand = sum(F.embedding(idx[..., k], rq.stages[k].codebook_KVD[0]) for k in range(3)).permute(0, 3, 1, 2)
    assert torch.allclose(rq.lookup(idx), by_hand, atol=1e-6)
    assert torch.allclose(q_st, rq.lookup(idx), atol=1e-6)
    assert torch.allclose(commitment, F.mse_loss(z, rq.lookup(idx)))


def test_residual_stage_k_picks_the_code_nearest_to_what_earlier_stages_left():
    rq = trained_residual(K=3, V=8, D=4, steps=3)
    z = torch.randn(2, 4, 3, 3)
    idx = rq.quantize(z)
    for k in range(3):
        r_ND = rows(z - rq.lookup(idx[..., :k])) if k else rows(z)
        best = torch.cdist(r_ND, rq.stages[k].codebook_KVD[0]).argmin(1)
        assert torch.equal(idx[..., k].reshape(-1), best)


def test_residual_straight_through_gradient_reaches_z_unchanged():
    rq = trained_residual(K=2, V=8, D=4, steps=2)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    upstream = torch.randn(2, 4, 3, 3)
    q_st, _, commitment, _ = rq(z)
    (q_st * upstream).sum().backward()
    assert torch.allclose(z.grad, upstream)
    z.grad = None
    commitment.backward()  # pulls z towards the (fixed) sum of its codes
    assert torch.allclose(z.grad, 2 * (z - rq.lookup(rq.quantize(z))).detach() / z.numel(), atol=1e-6)


def test_residual_under_bfloat16_autocast_is_float32_with_the_same_tokens():
    rq = trained_residual(K=2, V=256, D=16, steps=1)  # many close codes: bf16 distances would pick others
    same_tokens_in_float32_under_bfloat16_autocast(rq, torch.randn(16, 16, 4, 4))


def test_residual_codebooks_start_on_the_residuals_of_the_first_training_batch():
    torch.manual_seed(0)
    # decay 1 and no restarts: the first pass leaves the started codes where they were put
    rq = ResidualQuantizer(2, 8, 3, ema_decay=1.0, dead_code_threshold=0.0).train()
    z = torch.randn(4, 3, 3, 3) + 50.0  # far from the N(0, 1) codes a stage holds before it starts
    rq(z)
    assert all(bool(stage.initialized) for stage in rq.stages)
    idx = rq.eval().quantize(z)
    for k, r_ND in enumerate([rows(z), rows(z - rq.lookup(idx[..., :1]))]):
        codes_VD = rq.stages[k].codebook_KVD[0]
        nearest = (codes_VD[:, None] - r_ND[None]).norm(dim=-1).min(1).values  # exact (cdist rounds at 50)
        assert torch.all(nearest < 0.01), (k, nearest)


def test_residual_ema_moves_each_stage_codes_towards_the_residuals_assigned_to_them():
    rq = ResidualQuantizer(2, 4, 2, ema_decay=0.8, dead_code_threshold=0.0).train()
    old = [torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]),
           torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [-2.0, -2.0]])]
    for stage, codes_VD in zip(rq.stages, old):
        stage.initialized.fill_(True)  # keep these codebooks (no start from data)
        stage.codebook_KVD[0] = codes_VD
        stage.ema_sum_KVD[0] = codes_VD
        stage.ema_count_KV.fill_(1.0)
    vectors_ND = torch.tensor([[0.5, 1.5], [1.5, 0.5], [9.2, 0.3], [12.5, 0.5]])
    z = vectors_ND.t().reshape(1, 2, 1, 4)
    _, idx, _, _ = rq(z)
    idx_KN = idx.reshape(-1, 2).t()
    assert idx_KN[0].tolist() == [0, 0, 1, 1]
    residuals = [vectors_ND, vectors_ND - old[0][idx_KN[0]]]  # what each stage saw (before any update)
    for k in range(2):
        new_VD = rq.stages[k].codebook_KVD[0]
        for v in idx_KN[k].unique().tolist():
            target = residuals[k][idx_KN[k] == v].mean(0)
            assert (new_VD[v] - target).norm() < (old[k][v] - target).norm(), (k, v)
        unused = [v for v in range(4) if v not in idx_KN[k].tolist()]
        assert torch.allclose(new_VD[unused], old[k][unused], atol=1e-3)  # unassigned codes stay put


def test_residual_each_stage_reduces_the_error_on_average():
    K = 4
    rq = trained_residual(K=K, V=16, D=4, steps=20)
    torch.manual_seed(1)
    z = torch.randn(16, 4, 4, 4)  # new latents from the training distribution
    idx = rq.quantize(z)
    errors = [F.mse_loss(z, torch.zeros_like(z))] + [F.mse_loss(z, rq.lookup(idx[..., :k])) for k in range(1, K + 1)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors


def test_residual_eval_forward_changes_no_codebook():
    rq = trained_residual(K=2, V=8, D=4, steps=2)
    before = {name: value.clone() for name, value in rq.state_dict().items()}
    rq(torch.randn(2, 4, 3, 3))
    for name, value in rq.state_dict().items():
        assert torch.equal(value, before[name]), name
