"""Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

Each of the K tokens at a position owns d = len(levels) latent channels (C = K * d). Channel i is squashed into a
range that holds exactly levels[i] integers, rounded to the nearest one, and scaled back into [-1, 1]. The d rounded
digits of a token, read as a mixed-radix number, are its index; the codebook is the implicit grid of
V = prod(levels) points, so there is nothing to learn, nothing to keep in sync between processes, and no code can
die. The encoder learns through the straight-through rounding alone, so the commitment loss is zero.

Why the bound has a half-level offset: with an even number of levels the integers a channel may round to are not
symmetric around 0 (for 4 levels: -2, -1, 0, 1). The bound tanh(z + shift) * half_l - offset covers that lopsided
range, with shift = atanh(offset / half_l) so that z = 0 still lands on the digit 0. Digits are scaled by L // 2, so
even levels span [-1, 1 - 2/L] and odd levels [-1, 1]. The constants are vector-quantize-pytorch's:
half_l = (L - 1)(1 + eps) / 2 (the paper's listing has 1 - eps, and tan where atanh is meant); either way the bin
edges move only slightly, and every value still rounds to one of the L digits.

Indices follow vector-quantize-pytorch's FSQ (the paper's reference code): the first channel of a token is the
least significant digit (basis 1, L0, L0 * L1, ...), so token grids from either implementation agree.

As in the other quantizers, `lookup` is the one path from indices to latents, used by the training pass and by
decoding, so decode(encode(x)) is exactly the training reconstruction.
"""
import math

import torch
import torch.nn as nn


class FiniteScalarQuantizer(nn.Module):
    def __init__(self, num_codebooks, levels, eps=1e-3):
        super().__init__()
        levels = tuple(int(n) for n in levels)
        # with 2 levels the half-level offset puts the rounding boundary deep in tanh's tail (almost every value gets
        # the same digit), and 1 level carries no information
        assert all(n >= 3 for n in levels), f"every level must be at least 3, got {levels}"
        self.levels, self.eps = levels, eps
        self.K, self.D, self.V = num_codebooks, len(levels), math.prod(levels)
        self.latent_channels = self.K * self.D
        basis = [math.prod(levels[:i]) for i in range(len(levels))]
        # non-persistent: these follow from the constructor arguments, so checkpoints hold no FSQ state at all
        self.register_buffer("levels_D", torch.tensor(levels, dtype=torch.long), persistent=False)
        self.register_buffer("basis_D", torch.tensor(basis, dtype=torch.long), persistent=False)

    # --- layout ---------------------------------------------------------------------------------------------------
    def _split(self, z_BCHW):
        """(B, K*d, H, W) -> (B, H, W, K, d): the d channels of each token last."""
        B, C, H, W = z_BCHW.shape
        assert C == self.latent_channels, f"latent has {C} channels, expected K*d = {self.latent_channels}"
        return z_BCHW.float().reshape(B, self.K, self.D, H, W).permute(0, 3, 4, 1, 2)

    def _merge(self, codes_BHWKD):
        """(B, H, W, K, d) -> (B, K*d, H, W), channels ordered [token 0 | token 1 | ...]."""
        B, H, W, K, D = codes_BHWKD.shape
        return codes_BHWKD.reshape(B, H, W, K * D).permute(0, 3, 1, 2).contiguous()

    # --- the scalar steps -----------------------------------------------------------------------------------------
    def _bound(self, z_BHWKD):
        """Squash every channel into the range whose integers are its digits - L // 2 (see the module docstring)."""
        levels_D = self.levels_D.float()
        half_l_D = (levels_D - 1) * (1 + self.eps) / 2
        offset_D = (self.levels_D % 2 == 0).float() * 0.5
        shift_D = torch.atanh(offset_D / half_l_D)
        return torch.tanh(z_BHWKD + shift_D) * half_l_D - offset_D

    def _half_width(self):
        return (self.levels_D // 2).float()

    def _index(self, rounded_BHWKD):
        """Centred integer digits -> mixed-radix index idx_BHWK."""
        digits_BHWKD = rounded_BHWKD.long() + self.levels_D // 2
        return (digits_BHWKD * self.basis_D).sum(-1)

    # --- the two directions ---------------------------------------------------------------------------------------
    def quantize(self, z_BCHW):
        """Latent -> token grid idx_BHWK."""
        with torch.autocast(z_BCHW.device.type, enabled=False):
            return self._index(self._bound(self._split(z_BCHW)).round())

    def lookup(self, idx_BHWK):
        """Token grid -> quantized latent q_BCHW, every channel one of its level's values in [-1, 1]."""
        digits_BHWKD = idx_BHWK.unsqueeze(-1) // self.basis_D % self.levels_D
        half_width_D = self._half_width()
        return self._merge((digits_BHWKD.float() - half_width_D) / half_width_D)

    # --- training -------------------------------------------------------------------------------------------------
    def forward(self, z_BCHW):
        """Returns (straight-through q_BCHW, idx_BHWK, commitment loss (zero), per-token perplexity (K,)).

        Runs in float32 even under autocast: a half-precision bound would round some channels to other digits
        than the float32 pass that builds the token cache."""
        with torch.autocast(z_BCHW.device.type, enabled=False):
            return self._forward_fp32(z_BCHW.float())

    def _forward_fp32(self, z_BCHW):
        bounded_BHWKD = self._bound(self._split(z_BCHW))
        idx_BHWK = self._index(bounded_BHWKD.detach().round())
        q_BCHW = self.lookup(idx_BHWK)
        # straight-through past the rounding only: the encoder's gradient still goes through the bound's tanh
        soft_BCHW = self._merge(bounded_BHWKD / self._half_width())
        q_st_BCHW = soft_BCHW + (q_BCHW - soft_BCHW).detach()
        commitment = z_BCHW.new_zeros(())  # no codebook to commit to; kept so every quantizer returns the same
        return q_st_BCHW, idx_BHWK, commitment, self.perplexity(idx_BHWK)

    def perplexity(self, idx_BHWK):
        """exp(entropy) of each token slot's code distribution in this batch: V means all codes used evenly."""
        counts_KV = torch.stack([torch.bincount(idx_BHWK[..., k].flatten(), minlength=self.V)
                                 for k in range(idx_BHWK.shape[-1])]).float()
        p_KV = counts_KV / counts_KV.sum(1, keepdim=True)
        return torch.exp(-(p_KV * torch.log(p_KV.clamp_min(1e-10))).sum(1))
