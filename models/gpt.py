"""Raster-order, decoder-only transformer over VQ-VAE token grids, with KV-cache sampling.

Sequence layout (the tokenizer's, VQVAE.to_sequence): a grid idx_BHWK is read row by row, column by column, and within a position codebook
0 .. K-1, giving L = H*W*K tokens. The model input is [class token, t_0, ..., t_{L-2}] and the target is
[t_0, ..., t_{L-1}]: slot 0 holds the class (0..9, or `num_classes` for "no class"), slot s >= 1 holds token s-1.

Vocabulary: one per codebook, stored as one embedding table with an offset (token v of codebook k has row k*V + v),
and one output head of K*V logits of which position s reads only the V of its own codebook.
Positions: learned row, column and codebook embeddings, summed, so the model knows where a token sits in the grid
and which codebook it comes from.
"""
import torch
import torch.nn as nn

from config import GPTConfig
from models.prior import Prior, guide, register, sample_from_logits
from models.transformer import Block, block_flops, init_gpt2_weights, register_raster_positions


@register
class GPT(Prior):
    kind = "gpt"
    config_class = GPTConfig
    results_folder = "transformer"  # the first prior of the repo kept its folder and file names
    output_prefix = ""              # (its grids are temperature_*.png, not gpt_temperature_*.png)
    kv_cache = True
    edits = ("complete",)  # it never sees tokens after the one it draws, so it can only continue a prefix

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
    def title(self):
        return "GPT (raster)"

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
        if T == 1:  # a sampling step reads one codebook's logits: a plain slice, no gather
            book = first_target % self.grid_shape[-1]  # = book_L[first_target], read without touching the device
            return logits_BTKV[:, :, book]
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
        return self.cross_entropy(self.forward(tokens_BL, class_B), tokens_BL)

    # --- sampling ---------------------------------------------------------------------------------------------
    def flops_per_sequence(self):
        """n_layer causal blocks over the L tokens, then the head's logits (K codebooks x V codes) at every
        position."""
        d, head = self.cfg.d_model, self.grid_shape[-1] * self.V
        return self.cfg.n_layer * block_flops(self.L, self.L, d, self.cfg.mlp_ratio) + 2 * self.L * d * head

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

    def _sample(self, class_B, temperature, top_k, guidance, generator, use_cache=True, known_BL=None,
                known_mask_BL=None):
        """Token by token in raster order. known_mask_BL must keep a prefix (the `complete` edit): those tokens are
        fed as the prompt, the rest is drawn."""
        B, device = class_B.shape[0], class_B.device
        tokens = self._prefix(known_BL, known_mask_BL) if known_BL is not None else \
            torch.empty(B, 0, dtype=torch.long, device=device)
        class_B, guided = self.guided_classes(class_B, guidance)  # the unconditional copy runs in the same batch
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
                logits_BV = guide(logits_BV, guidance)
            next_B = sample_from_logits(logits_BV, temperature, top_k, generator)
            tokens = torch.cat([tokens, next_B[:, None]], dim=1)
        return tokens

    @staticmethod
    def _prefix(known_BL, known_mask_BL):
        """The kept tokens, which must be the same first T positions of every sequence."""
        T = int(known_mask_BL.all(0).long().cumprod(0).sum())
        if known_mask_BL[:, T:].any():
            raise ValueError("the raster GPT can only keep a prefix of the sequence (the complete edit)")
        return known_BL[:, :T].long()
