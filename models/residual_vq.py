"""Residual vector quantizer (SoundStream, Zeghidour et al. 2021; RQ-VAE, Lee et al. 2022).

The latent z_BCHW has C = D channels, one D-dimensional vector per position. Stage 0 quantizes the vector, stage 1
quantizes what stage 0 left over, and so on: stage k picks the code nearest to z - (code_0 + ... + code_{k-1}).
Every position gets K tokens (idx_BHWK, coarse to fine) and the quantized latent is the sum of its K codes. Unlike
K parallel codebooks on K chunks of channels, all K tokens describe the same vector, each one more finely, so the
error shrinks with every stage while each codebook stays small.

Each stage is an EMA codebook with dead-code restarts: a MultiCodebookQuantizer with one codebook, fed the residuals
it sees. That brings its float32 distances, its start on random encoder outputs and the synchronisation of its
statistics between processes (DDP) along unchanged. A stage starts on random residual rows of the first training
batch, after the stages before it have started, so its codes begin where its inputs are.

In a training pass every stage picks its codes with the codebooks as they were at the start of the pass (the same
codes `quantize` gives), and the EMA updates come afterwards. As in the other quantizers, `lookup` is the one path
from indices to latents, so decode(encode(x)) is exactly the training reconstruction.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.quantizer import MultiCodebookQuantizer


class ResidualQuantizer(nn.Module):
    def __init__(self, num_quantizers, codebook_size, code_dim, ema_decay=0.99, dead_code_threshold=1.0):
        super().__init__()
        self.K, self.V, self.D = num_quantizers, codebook_size, code_dim
        self.latent_channels = code_dim
        self.stages = nn.ModuleList(MultiCodebookQuantizer(1, codebook_size, code_dim, ema_decay, dead_code_threshold)
                                    for _ in range(num_quantizers))

    def _code(self, k, idx_any):
        """Stage k's code vectors for indices of any shape: (*idx.shape, D)."""
        return F.embedding(idx_any, self.stages[k].codebook_KVD[0])

    def _descend(self, z_BCHW, start_codebooks=False):
        """Quantize stage by stage: the residual each stage saw and the codes it picked, ([r_1ND], [idx_1N]).

        With start_codebooks, a stage that has not started yet starts on the residuals it is about to quantize."""
        r_1ND = self.stages[0]._split(z_BCHW.detach())
        residuals, picks = [], []
        for k, stage in enumerate(self.stages):
            if start_codebooks and not bool(stage.initialized):
                stage._init_from(r_1ND)
            idx_1N = stage.nearest_codes(r_1ND)
            residuals.append(r_1ND)
            picks.append(idx_1N)
            r_1ND = r_1ND - self._code(k, idx_1N)
        return residuals, picks

    def _grid(self, picks, z_BCHW):
        """[(1, N)] per stage -> idx_BHWK."""
        B, _, H, W = z_BCHW.shape
        return torch.cat(picks).reshape(self.K, B, H, W).permute(1, 2, 3, 0)

    # --- the two directions ---------------------------------------------------------------------------------------
    def quantize(self, z_BCHW):
        """Latent -> token grid idx_BHWK (token k: stage k's code for what stages 0..k-1 left)."""
        with torch.autocast(z_BCHW.device.type, enabled=False):
            return self._grid(self._descend(z_BCHW)[1], z_BCHW)

    def lookup(self, idx_BHWK):
        """Token grid -> q_BCHW, the sum of the codes of the given stages. A grid with fewer than K tokens per
        position (the first stages) gives the coarser latent of those stages."""
        q_BHWD = self._code(0, idx_BHWK[..., 0])
        for k in range(1, idx_BHWK.shape[-1]):
            q_BHWD = q_BHWD + self._code(k, idx_BHWK[..., k])
        return q_BHWD.permute(0, 3, 1, 2).contiguous()

    # --- training -------------------------------------------------------------------------------------------------
    def forward(self, z_BCHW):
        """Returns (straight-through q_BCHW, idx_BHWK, commitment loss, per-stage perplexity (K,)).

        Runs in float32 even under autocast (codebook statistics and distances need the precision)."""
        with torch.autocast(z_BCHW.device.type, enabled=False):
            return self._forward_fp32(z_BCHW.float())

    def _forward_fp32(self, z_BCHW):
        residuals, picks = self._descend(z_BCHW, start_codebooks=self.training)
        idx_BHWK = self._grid(picks, z_BCHW)
        q_BCHW = self.lookup(idx_BHWK)
        commitment = F.mse_loss(z_BCHW, q_BCHW.detach())
        if self.training:
            for stage, r_1ND, idx_1N in zip(self.stages, residuals, picks):
                stage._ema_update(r_1ND, idx_1N)
        q_st_BCHW = z_BCHW + (q_BCHW - z_BCHW).detach()  # straight-through: gradients pass to the encoder as-is
        return q_st_BCHW, idx_BHWK, commitment, self.perplexity(idx_BHWK)

    def perplexity(self, idx_BHWK):
        """exp(entropy) of each stage's code distribution in this batch: V means all codes used evenly."""
        return torch.cat([stage.perplexity(idx_BHWK[..., k:k + 1]) for k, stage in enumerate(self.stages)])
