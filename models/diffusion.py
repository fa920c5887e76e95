"""Discrete-diffusion prior over VQ-VAE token grids: a bidirectional transformer that denoises whole sequences.

Token layout is the raster GPT's (models/gpt.py): L = H*W*K tokens, codebooks innermost, code v of codebook k at
row k*V + v of one embedding table, one head of K*V logits of which position s reads its own codebook's V. Unlike the
GPT every position sees every other one, and the first slot is a condition token: class embedding (last id = "no
class") plus an embedding of the noise level t in [0, 1]. The network always predicts the clean tokens x0.

Two forward (noising) processes, chosen by `cfg.noise`; corrupted_fraction(t) = sin(pi*t/2) is the share of tokens
corrupted at time t, the cosine schedule of MaskGIT written as a noise level (0 at t=0, all at t=1):

mask (absorbing state; VQ-Diffusion, Gu et al. 2022; MaskGIT, Chang et al. 2022): round(corrupted_fraction(t) * L)
    random positions are replaced by a MASK token with its own embedding. Training: cross-entropy on the masked
    positions. Sampling (MaskGIT decoding): start all masked; each step samples a code for every masked position and
    reveals the most confident ones (log-prob + annealed Gumbel noise), following `unmask_schedule`; a revealed token
    is never changed again.
uniform (D3PM, Austin et al. 2021, uniform transition with alpha_t = 1 - corrupted_fraction(t)): each token is
    replaced, with probability corrupted_fraction(t), by a uniformly random code of its codebook. Training:
    cross-entropy on all positions. Sampling starts from random codes and steps t = 1 -> 0 on an even grid with the
    posterior p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p_model(x0 | x_t) (D3PM's x0-parameterization): the image
    emerges from random tokens pieced together like a jigsaw, and any token may change again until the last step.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from config import DiffusionConfig
from models.prior import Prior, filtered_probs, guide, progressive_scale, register
from models.transformer import Block, block_flops, init_gpt2_weights, register_raster_positions


def corrupted_fraction(t):
    """Noise level t in [0, 1] -> share of corrupted tokens, sin(pi*t/2); a float gives a float, a tensor a tensor."""
    return torch.sin(math.pi / 2 * t) if torch.is_tensor(t) else math.sin(math.pi / 2 * t)


def _reveal_counts(unknown_B, steps):
    """reveal_BS[b, i]: how many of sample b's unknown positions reverse step i reveals. After step i,
    floor(unknown * cos(pi/2 * (i+1)/steps)) stay masked (MaskGIT); entries may be 0 when steps > unknown."""
    ratio_S = torch.arange(1, steps + 1, dtype=torch.float64) / steps
    left_BS = torch.floor(unknown_B.double()[:, None] * torch.cos(math.pi / 2 * ratio_S)).long()
    left_BS[:, -1] = 0  # cos(pi/2) is 6e-17 in floating point, not 0: the last step reveals the rest
    return torch.cat([unknown_B[:, None], left_BS[:, :-1]], dim=1) - left_BS


def unmask_schedule(num_tokens, steps):
    """Positions revealed by each reverse step of the mask process: sums to num_tokens, every entry >= 1.

    Steps that would reveal nothing (only when steps > num_tokens) are dropped, so the model runs one forward pass per
    entry: forward passes = len(unmask_schedule(L, steps)) <= min(steps, L)."""
    return [n for n in _reveal_counts(torch.tensor([num_tokens]), steps)[0].tolist() if n > 0]


def _draw(probs_BLV, generator):
    B, L, V = probs_BLV.shape
    return torch.multinomial(probs_BLV.reshape(-1, V), 1, generator=generator).view(B, L)


@register
class DiscreteDiffusion(Prior):
    kind = "diffusion"
    config_class = DiffusionConfig
    exact_likelihood = False  # its loss is a denoising loss, not the likelihood of the tokens
    edits = ("inpaint", "outpaint", "complete")
    reverse_process = True
    sampling_steps = True
    progressive_guidance = True

    def __init__(self, cfg, grid_shape, codebook_size):
        super().__init__()
        if cfg.noise not in ("mask", "uniform"):
            raise ValueError(f"diffusion noise must be 'mask' or 'uniform', got {cfg.noise!r}")
        self.cfg, self.grid_shape, self.V = cfg, tuple(grid_shape), codebook_size
        H, W, K = self.grid_shape
        self.L = H * W * K
        self.mask_id = codebook_size  # the MASK "code": one past the last real code of every codebook
        d = cfg.d_model
        self.token_emb = nn.Embedding(K * codebook_size + 1, d)  # last row: MASK, shared by all codebooks
        self.class_emb = nn.Embedding(cfg.num_classes + 1, d)  # last id = "no class"
        self.noise_mlp = nn.Sequential(nn.Linear(2 * (d // 2), d), nn.GELU(), nn.Linear(d, d))
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(d // 2) / (d // 2)),
                             persistent=False)
        self.row_emb, self.col_emb, self.book_emb = nn.Embedding(H, d), nn.Embedding(W, d), nn.Embedding(K, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.n_head, cfg.mlp_ratio, cfg.dropout, causal=False)
                                    for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, K * codebook_size)
        register_raster_positions(self, self.grid_shape)
        init_gpt2_weights(self, cfg.n_layer)

    @classmethod
    def checkpoint_name(cls, cfg):
        """diffusion.pt for the mask process, diffusion_<noise>.pt for another, so both can be compared."""
        return cls.kind if cfg.noise == "mask" else f"{cls.kind}_{cfg.noise}"

    @property
    def title(self):
        return f"diffusion, {self.cfg.noise}"

    def flops_per_sequence(self):
        """n_layer bidirectional blocks over the class token and the L tokens, then the head's logits (K codebooks x V
        codes) at every token."""
        d, T, head = self.cfg.d_model, self.L + 1, self.grid_shape[-1] * self.V
        return self.cfg.n_layer * block_flops(T, T, d, self.cfg.mlp_ratio) + 2 * self.L * d * head

    def forward_passes(self, steps=None):
        """Transformer evaluations per image (doubled in batch size, not in count, by guidance)."""
        steps = steps or self.cfg.steps
        return len(unmask_schedule(self.L, steps)) if self.cfg.noise == "mask" else steps

    # --- network ----------------------------------------------------------------------------------------------
    def _noise_embedding(self, t_B):
        """Sinusoidal features of 1000*t (the DDPM/DiT timestep scale) through an MLP."""
        args_BF = 1000.0 * t_B.float()[:, None] * self.freqs
        return self.noise_mlp(torch.cat([torch.cos(args_BF), torch.sin(args_BF)], dim=-1))

    def forward(self, noisy_BL, class_B, t_B):
        """logits_BLV over the clean codes x0 at every position, given the noisy tokens (codes or mask_id)."""
        B, L = noisy_BL.shape
        t_B = torch.as_tensor(t_B, dtype=torch.float32, device=noisy_BL.device).expand(B)
        rows_BL = torch.where(noisy_BL == self.mask_id, self.token_emb.num_embeddings - 1,
                              noisy_BL + self.book_L * self.V)
        x_BLD = (self.token_emb(rows_BL) + self.row_emb(self.row_L) + self.col_emb(self.col_L)
                 + self.book_emb(self.book_L))
        cond_B1D = (self.class_emb(class_B) + self._noise_embedding(t_B))[:, None]
        x_BTD = self.drop(torch.cat([cond_B1D, x_BLD], dim=1))
        for block in self.blocks:
            x_BTD = block(x_BTD)
        logits_BLKV = self.head(self.ln_f(x_BTD[:, 1:])).view(B, L, -1, self.V)
        return logits_BLKV[:, torch.arange(L, device=noisy_BL.device), self.book_L]

    # --- forward process and training -------------------------------------------------------------------------
    def corrupt(self, tokens_BL, t_B, generator=None):
        """Noise tokens to level t_B; returns (noisy_BL, corrupted_BL) with corrupted_BL True where a token was
        masked (mask) or replaced by a random code, which may by chance equal the old one (uniform)."""
        B, L = tokens_BL.shape
        frac_B = corrupted_fraction(t_B.float())
        noise_BL = torch.rand(B, L, generator=generator, device=tokens_BL.device)
        if self.cfg.noise == "uniform":
            corrupted_BL = noise_BL < frac_B[:, None]  # rand is < 1, so t=1 replaces all, t=0 none
            random_BL = torch.randint(0, self.V, (B, L), generator=generator, device=tokens_BL.device)
            return torch.where(corrupted_BL, random_BL, tokens_BL), corrupted_BL
        # Exactly n per sample (not independent coins), as MaskGIT: the model sees the noise level it is told.
        n_B = torch.round(frac_B * L).long()
        n_B = torch.where(t_B > 0, n_B.clamp(min=1), n_B)
        rank_BL = noise_BL.argsort(dim=1).argsort(dim=1)  # a random permutation per sample
        corrupted_BL = rank_BL < n_B[:, None]
        return tokens_BL.masked_fill(corrupted_BL, self.mask_id), corrupted_BL

    def loss(self, tokens_BL, class_B):
        t_B = 1.0 - torch.rand(tokens_BL.shape[0], device=tokens_BL.device)  # U(0, 1]: t=0 would teach nothing
        noisy_BL, corrupted_BL = self.corrupt(tokens_BL, t_B)
        logits_BLV = self.forward(noisy_BL, class_B, t_B).float()
        if self.cfg.noise == "mask":  # unmasked tokens are copied at sampling time, so only masked ones are scored
            return self.cross_entropy(logits_BLV[corrupted_BL], tokens_BL[corrupted_BL])
        return self.cross_entropy(logits_BLV, tokens_BL)

    # --- sampling ---------------------------------------------------------------------------------------------
    def guidance_at(self, done, guidance):
        """The guidance scale once a share `done` of the reverse steps has run: 1 at the first step, guidance at the
        last (Muse's linearly increasing guidance)."""
        return progressive_scale(guidance, done) if self.progressive_guidance else guidance

    def _sample(self, class_B, temperature, top_k, guidance, generator, known_BL=None, known_mask_BL=None,
                steps=None, return_process=False):
        """Draw tokens_BL in `steps` reverse steps. known_BL / known_mask_BL (True = keep): editing, kept tokens
        never change. return_process=True also returns one dict per forward pass: tokens_BL (state after the step,
        -1 where still masked) and x0_BL (that step's argmax prediction)."""
        B, L, device = class_B.shape[0], self.L, class_B.device
        steps = steps or self.cfg.steps
        if known_mask_BL is None:
            known_BL = torch.zeros(B, L, dtype=torch.long, device=device)
            known_mask_BL = torch.zeros(B, L, dtype=torch.bool, device=device)
        known_BL = torch.where(known_mask_BL, known_BL.long(), 0)  # values under known_mask False are ignored
        classes, guided = self.guided_classes(class_B, guidance)

        def denoise(tokens_BL, t_B, done):
            """p(x0 | x_t) logits; `done` in [0, 1]: the share of the reverse process already run."""
            if not guided:
                return self(tokens_BL, classes, t_B).float()
            logits_2BxV = self(torch.cat([tokens_BL, tokens_BL]), classes, torch.cat([t_B, t_B])).float()
            return guide(logits_2BxV, self.guidance_at(done, guidance))

        run = self._sample_mask if self.cfg.noise == "mask" else self._sample_uniform
        process = []
        tokens_BL = run(denoise, known_BL, known_mask_BL, steps, temperature, top_k, generator, process)
        return (tokens_BL, process) if return_process else tokens_BL

    def _sample_mask(self, denoise, known_BL, known_mask_BL, steps, temperature, top_k, generator, process):
        B, L = known_BL.shape
        tokens_BL = known_BL.masked_fill(~known_mask_BL, self.mask_id)
        reveal_BS = _reveal_counts((~known_mask_BL).sum(1).cpu(), steps)
        reveal_BS = reveal_BS[:, reveal_BS.any(0)].to(tokens_BL.device)  # a step revealing nothing costs no pass
        S = reveal_BS.shape[1]
        for j in range(S):
            masked_BL = tokens_BL == self.mask_id
            t_B = torch.asin(masked_BL.float().mean(1)) * 2 / math.pi  # the t whose corrupted_fraction this is
            logits_BLV = denoise(tokens_BL, t_B, j / max(S - 1, 1))
            probs_BLV = filtered_probs(logits_BLV, temperature, top_k)
            drawn_BL = _draw(probs_BLV, generator)
            # MaskGIT: keep the most confident draws; Gumbel noise, annealed to 0, stops early steps from all
            # committing to the same "safe" background codes.
            u_BL = torch.rand(B, L, generator=generator, device=tokens_BL.device).clamp(1e-20, 1 - 1e-7)
            conf_BL = (probs_BLV.gather(-1, drawn_BL[..., None])[..., 0].log()
                       - self.cfg.choice_temperature * (1 - (j + 1) / S) * torch.log(-torch.log(u_BL)))
            conf_BL = conf_BL.masked_fill(~masked_BL, float("-inf"))
            rank_BL = conf_BL.argsort(dim=1, descending=True).argsort(dim=1)
            reveal_BL = masked_BL & (rank_BL < reveal_BS[:, j:j + 1])
            tokens_BL = torch.where(reveal_BL, drawn_BL, tokens_BL)
            process.append(dict(tokens_BL=tokens_BL.masked_fill(tokens_BL == self.mask_id, -1),
                                x0_BL=logits_BLV.argmax(-1)))
        return tokens_BL

    def _sample_uniform(self, denoise, known_BL, known_mask_BL, steps, temperature, top_k, generator, process):
        B, L = known_BL.shape
        tokens_BL = torch.randint(0, self.V, (B, L), generator=generator, device=known_BL.device)
        tokens_BL = torch.where(known_mask_BL, known_BL, tokens_BL)
        for i in range(steps):
            t, s = 1.0 - i / steps, 1.0 - (i + 1) / steps
            a_t, a_s = 1.0 - corrupted_fraction(t), 1.0 - corrupted_fraction(s)  # shares left intact
            a_ts = a_t / a_s if a_s > 0 else 0.0  # q(x_t | x_s) keeps x_s with prob a_ts; a_t = 0 at t = 1
            logits_BLV = denoise(tokens_BL, torch.full((B,), t, device=tokens_BL.device), i / max(steps - 1, 1))
            p_BLV = filtered_probs(logits_BLV, temperature, top_k)
            # p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p(x0 | x_t), with the posterior q(x_s | x_t, x0) =
            # q(x_t | x_s) q(x_s | x0) / q(x_t | x0). The network is trained to give p(x0 | x_t), so the division by
            # q(x_t | x0) belongs here: without it x0 = x_t is over-weighted by ~1/(1 - a_t) and wrong tokens are
            # never corrected (measured: FID grew with the number of steps). At s = 0 this samples p itself.
            one_hot_BLV = F.one_hot(tokens_BL, self.V).float()
            w_BLV = p_BLV / (a_t * one_hot_BLV + (1 - a_t) / self.V)  # p(x0) / q(x_t | x0)
            like_BLV = a_ts * one_hot_BLV + (1 - a_ts) / self.V  # q(x_t | x_s = j)
            post_BLV = like_BLV * (a_s * w_BLV + (1 - a_s) / self.V * w_BLV.sum(-1, keepdim=True))
            drawn_BL = _draw(post_BLV / post_BLV.sum(-1, keepdim=True), generator)
            tokens_BL = torch.where(known_mask_BL, known_BL, drawn_BL)
            process.append(dict(tokens_BL=tokens_BL, x0_BL=logits_BLV.argmax(-1)))
        return tokens_BL
