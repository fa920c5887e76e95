"""The transformer parts the priors share: self-attention with a key/value cache, the pre-norm block, GPT-2's weight
init, and the raster-order position buffers of a single-scale token grid.

Token layout (single-scale tokenizer): a grid idx_BHWK is read row by row, column by column, and within a position
codebook 0 .. K-1, giving L = H*W*K tokens.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def register_raster_positions(module, grid_shape):
    """Buffers row_L, col_L, book_L: the row, column and codebook of each position s (0..L-1) of the sequence."""
    H, W, K = grid_shape
    pos = torch.arange(H * W * K)
    module.register_buffer("row_L", pos // (W * K), persistent=False)
    module.register_buffer("col_L", (pos // K) % W, persistent=False)
    module.register_buffer("book_L", pos % K, persistent=False)


def _init_linear_and_embedding(module):
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def init_gpt2_weights(model, n_layer):
    """GPT-2's init: N(0, 0.02) weights and zero biases, residual projections scaled down by depth."""
    model.apply(_init_linear_and_embedding)
    for name, p in model.named_parameters():
        if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
            nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))


class SelfAttention(nn.Module):
    """Multi-head self-attention through SDPA, with an optional key/value cache.

    causal=True: the raster GPT (token s sees tokens <= s). causal=False: every query sees every key it is given,
    unless the caller passes `attn_mask` (VAR's block-causal mask); the bidirectional diffusion prior passes none."""

    def __init__(self, d_model, n_head, dropout, causal=True):
        super().__init__()
        self.n_head, self.dropout, self.causal = n_head, dropout, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x_BTD, cache=None, start=0, attn_mask=None):
        """cache: a dict holding this layer's key/value buffers, of a fixed size (max_len slots, zero until written;
        made on first use, in the keys' dtype, which under autocast is the autocast dtype); this chunk's
        keys/values go to slots [start, start+T), attention reads slots [0, start+T)."""
        B, T, D = x_BTD.shape
        q, k, v = self.qkv(x_BTD).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if "k" not in cache:
                shape = (B, self.n_head, cache["max_len"], D // self.n_head)
                cache["k"], cache["v"] = k.new_zeros(shape), v.new_zeros(shape)
            cache["k"][:, :, start:start + T] = k
            cache["v"][:, :, start:start + T] = v
            if T == 1 and attn_mask is None and not self.training:  # a sampling step: one query sees every slot
                return self.proj(one_query_attention(q, cache["k"], cache["v"], start + 1).reshape(B, 1, D))
            k, v = cache["k"][:, :, :start + T], cache["v"][:, :, :start + T]
        if not self.causal:
            mask, causal = attn_mask, False
        elif T == 1:  # one new token sees everything before it: no mask needed
            mask, causal = None, False
        elif start == 0:
            mask, causal = None, True
        else:  # a chunk appended after cached tokens: query i sees keys up to start + i
            mask = torch.ones(T, start + T, dtype=torch.bool, device=x_BTD.device).tril(diagonal=start)
            causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


def one_query_attention(q_BH1E, k_BHME, v_BHME, filled):
    """softmax(q k^T / sqrt(E)) v for one query per head over the first `filled` slots of a fixed-size key/value
    cache: what SDPA computes on the cache's filled slices, as two small matmuls over the whole cache with the empty
    slots masked out. It is the GPT's sampling step. On CPUs it is faster than SDPA here (RESULTS.md, sampling speed):
    SDPA's kernel is slow for a single query, and a slice of the cache, not being contiguous, is copied before every
    matmul, where the whole cache is not. The scores and softmax are float32, as inside SDPA's kernels,
    whatever dtype autocast gives the matmuls."""
    scores_BH1M = (q_BH1E @ k_BHME.transpose(-1, -2)).float() * q_BH1E.shape[-1] ** -0.5
    scores_BH1M[..., filled:] = float("-inf")
    return scores_BH1M.softmax(dim=-1).to(v_BHME.dtype) @ v_BHME


def block_flops(tokens, context, d_model, mlp_ratio):
    """Forward FLOPs (a multiply-add counts 2) of one block on `tokens` tokens that each attend to `context` tokens:
    per token, the q/k/v and output projections 2 * 4 d^2, the MLP 2 * 2 r d^2, the scores and the weighted sum of
    values 2 * 2 * context * d. As in nanoGPT's estimate_mfu (after PaLM), attention counts the whole context even
    where a causal mask zeroes part of it; norms, activations and softmax are left out (a few percent)."""
    return tokens * (8 * d_model ** 2 + 4 * mlp_ratio * d_model ** 2 + 4 * context * d_model)


def mlp(d_model, mlp_ratio, dropout):
    """The feed-forward half of a block: d -> mlp_ratio * d -> d."""
    return nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                         nn.Linear(mlp_ratio * d_model, d_model), nn.Dropout(dropout))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model, n_head, mlp_ratio, dropout, causal=True):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_head, dropout, causal)
        self.mlp = mlp(d_model, mlp_ratio, dropout)

    def forward(self, x, cache=None, start=0):
        x = x + self.attn(self.ln1(x), cache, start)
        return x + self.mlp(self.ln2(x))
