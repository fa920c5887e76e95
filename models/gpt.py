"""Raster-order, decoder-only transformer over VQ-VAE token grids, with KV-cache sampling.

Sequence layout (see DESIGN.md): a grid idx_BHWK is read row by row, column by column, and within a position codebook
0 .. K-1, giving L = H*W*K tokens. The model input is [class token, t_0, ..., t_{L-2}] and the target is
[t_0, ..., t_{L-1}]: slot 0 holds the class (0..9, or `num_classes` for "no class"), slot s >= 1 holds token s-1.

Vocabulary: one per codebook, stored as one embedding table with an offset (token v of codebook k has row k*V + v),
and one output head of K*V logits of which position s reads only the V of its own codebook.
Positions: learned row, column and codebook embeddings, summed, so the model knows where a token sits in the grid
and which codebook it comes from.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def grid_to_sequence(idx_BHWK):
    """(B, H, W, K) -> (B, L) in raster order, codebooks innermost."""
    return idx_BHWK.reshape(idx_BHWK.shape[0], -1)


def sequence_to_grid(tokens_BL, grid_shape):
    H, W, K = grid_shape
    return tokens_BL.reshape(tokens_BL.shape[0], H, W, K)


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
        """cache: a dict holding this layer's key/value buffers (made on first use, in the keys' dtype, which under
        autocast is the autocast dtype); this chunk's keys/values go to slots [start, start+T), attention reads
        slots [0, start+T)."""
        B, T, D = x_BTD.shape
        q, k, v = self.qkv(x_BTD).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if "k" not in cache:
                shape = (B, self.n_head, cache["max_len"], D // self.n_head)
                cache["k"], cache["v"] = k.new_empty(shape), v.new_empty(shape)
            cache["k"][:, :, start:start + T] = k
            cache["v"][:, :, start:start + T] = v
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


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model, n_head, mlp_ratio, dropout, causal=True):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_head, dropout, causal)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                                 nn.Linear(mlp_ratio * d_model, d_model), nn.Dropout(dropout))

    def forward(self, x, cache=None, start=0):
        x = x + self.attn(self.ln1(x), cache, start)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    kind = "gpt"

    def __init__(self, cfg, grid_shape, codebook_size):
        super().__init__()
        self.cfg, self.grid_shape, self.V = cfg, tuple(grid_shape), codebook_size
        H, W, K = self.grid_shape
        self.L = H * W * K
        d = cfg.d_model
        self.token_emb = nn.Embedding(K * codebook_size, d)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, d)  # last id = "no class"
        self.row_emb, self.col_emb, self.book_emb = nn.Embedding(H, d), nn.Embedding(W, d), nn.Embedding(K, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.n_head, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, K * codebook_size)
        register_raster_positions(self, self.grid_shape)
        init_gpt2_weights(self, cfg.n_layer)

    @property
    def no_class(self):
        return self.cfg.num_classes

    # --- embedding and heads ----------------------------------------------------------------------------------
    def _embed_tokens(self, tokens_BT, start):
        """Embed tokens that occupy sequence positions [start, start+T)."""
        pos = slice(start, start + tokens_BT.shape[1])
        book_T = self.book_L[pos]
        return (self.token_emb(tokens_BT + book_T * self.V) + self.row_emb(self.row_L[pos])
                + self.col_emb(self.col_L[pos]) + self.book_emb(book_T))

    def _logits(self, h_BTD, first_target):
        """Logits over the V codes of each slot's target codebook; slot i predicts position first_target + i."""
        B, T, _ = h_BTD.shape
        logits_BTKV = self.head(self.ln_f(h_BTD)).view(B, T, -1, self.V)
        book_T = self.book_L[first_target:first_target + T]
        return logits_BTKV[:, torch.arange(T, device=h_BTD.device), book_T]

    def _run(self, x_BTD, caches=None, start=0):
        x_BTD = self.drop(x_BTD)
        for i, block in enumerate(self.blocks):
            x_BTD = block(x_BTD, None if caches is None else caches[i], start)
        return x_BTD

    # --- training / scoring -----------------------------------------------------------------------------------
    def forward(self, tokens_BL, class_B):
        """Teacher-forced logits_BLV: logits[:, s] predicts tokens[:, s] from the class and tokens[:, :s]."""
        B, L = tokens_BL.shape
        x = torch.cat([self.class_emb(class_B)[:, None], self._embed_tokens(tokens_BL[:, :-1], 0)], dim=1)
        return self._logits(self._run(x), 0)

    def loss(self, tokens_BL, class_B):
        logits_BLV = self.forward(tokens_BL, class_B)
        return F.cross_entropy(logits_BLV.float().reshape(-1, self.V), tokens_BL.reshape(-1))

    # --- sampling ---------------------------------------------------------------------------------------------
    def forward_passes(self, steps=None):
        return self.L

    def new_cache(self):
        """One key/value store per layer; slots 0..L-1 are the only inputs ever fed (slot L would predict nothing)."""
        return [{"max_len": self.L} for _ in self.blocks]

    def step_logits(self, class_B, prefix_BT, caches, start):
        """Feed input slots [start, start+T) through the cache; return logits for the token after the last slot.

        Slot 0 is the class token; slot s >= 1 holds token s-1 of `prefix`. With start=0 the whole prompt
        (class + prefix) is fed at once; afterwards one token per call.
        """
        if start == 0:
            x = self.class_emb(class_B)[:, None]
            if prefix_BT.shape[1]:
                x = torch.cat([x, self._embed_tokens(prefix_BT, 0)], dim=1)
        else:
            x = self._embed_tokens(prefix_BT, start - 1)
        h = self._run(x, caches, start)
        return self._logits(h[:, -1:], start + x.shape[1] - 1)[:, 0]

    @torch.no_grad()
    def sample(self, class_B, temperature=1.0, top_k=0, cfg_scale=1.0, prefix_BT=None, use_cache=True,
               generator=None, **unused):
        """Draw token sequences tokens_BL for the given classes (use `no_class` for unconditional).

        prefix_BT: optional first tokens to keep (completion). cfg_scale != 1 mixes conditional and unconditional
        logits (classifier-free guidance): uncond + s * (cond - uncond).
        """
        B, device = class_B.shape[0], class_B.device
        tokens = (prefix_BT if prefix_BT is not None else torch.empty(B, 0, dtype=torch.long, device=device)).long()
        guided = cfg_scale != 1.0 and bool((class_B != self.no_class).any())  # all-"no class" needs no guidance
        if guided:  # run the unconditional copy in the same batch
            class_B = torch.cat([class_B, torch.full_like(class_B, self.no_class)])
        caches = self.new_cache() if use_cache else None
        fed = 0  # input slots already in the cache
        while tokens.shape[1] < self.L:
            both = torch.cat([tokens, tokens]) if guided else tokens
            if use_cache:
                new = both if fed == 0 else both[:, fed - 1:]
                logits_BV = self.step_logits(class_B, new, caches, fed)
                fed = both.shape[1] + 1
            else:  # recompute the whole prefix every step (the slow path, kept for benchmarks and tests)
                logits_BV = self.step_logits(class_B, both, None, 0)
            logits_BV = logits_BV.float()
            if guided:
                cond, uncond = logits_BV.chunk(2)
                logits_BV = uncond + cfg_scale * (cond - uncond)
            next_B = sample_from_logits(logits_BV, temperature, top_k, generator)
            tokens = torch.cat([tokens, next_B[:, None]], dim=1)
        return tokens


def filtered_probs(logits_V, temperature=1.0, top_k=0):
    """Softmax of logits / temperature over the last dim, restricted to the top_k codes when top_k > 0."""
    logits_V = logits_V / temperature
    if top_k and top_k < logits_V.shape[-1]:
        kth = torch.topk(logits_V, top_k, dim=-1).values[..., -1:]
        logits_V = logits_V.masked_fill(logits_V < kth, float("-inf"))
    return torch.softmax(logits_V, dim=-1)


def sample_from_logits(logits_BV, temperature=1.0, top_k=0, generator=None):
    return torch.multinomial(filtered_probs(logits_BV, temperature, top_k), 1, generator=generator)[:, 0]
