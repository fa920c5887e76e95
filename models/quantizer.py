"""Multi-codebook vector quantizer with EMA codebooks and dead-code restarts.

The encoder's latent z_BCHW has C = K * D channels. They are split into K chunks of D channels, and chunk k is
quantized by codebook k (V codes of dimension D), so every spatial position gets K tokens: idx_BHWK.

Why EMA instead of a codebook loss: the EMA update (van den Oord et al. 2017, appendix; Razavi et al. 2019) moves each
code to the running mean of the vectors assigned to it. It needs no learning rate, converges faster, and together
with restarting unused codes from encoder outputs keeps nearly every code in use, which matters when a tiny model
has to learn the token distribution afterwards. The encoder still gets the commitment loss beta * ||z - sg(q)||^2.

Several processes (torchrun + DDP): each sees a slice of the global batch. The counts and sums of the EMA update are
summed over the processes before they are used, and the random encoder outputs that start or restart codes are
taken on rank 0 and broadcast, so every process holds the same codebooks at every step (what a single process with
the global batch would compute, up to which random rows a restart picks).

There is one code path from indices to vectors (`lookup`): the training forward pass uses it on the indices it just
computed, and VQVAE.decode uses it on sampled indices, so decode(encode(x)) is exactly the training reconstruction.
"""
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def _distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class MultiCodebookQuantizer(nn.Module):
    def __init__(self, num_codebooks, codebook_size, code_dim, ema_decay=0.99, dead_code_threshold=1.0, eps=1e-5):
        super().__init__()
        self.K, self.V, self.D = num_codebooks, codebook_size, code_dim
        self.latent_channels = num_codebooks * code_dim
        self.decay, self.dead_threshold, self.eps = ema_decay, dead_code_threshold, eps
        self.register_buffer("codebook_KVD", torch.randn(num_codebooks, codebook_size, code_dim))
        self.register_buffer("ema_count_KV", torch.ones(num_codebooks, codebook_size))
        self.register_buffer("ema_sum_KVD", self.codebook_KVD.clone())
        self.register_buffer("initialized", torch.tensor(False))

    # --- the two directions ------------------------------------------------------------------------------------
    def _split(self, z_BCHW):
        """(B, K*D, H, W) -> (K, B*H*W, D): one row of vectors per codebook."""
        B, C, H, W = z_BCHW.shape
        assert C == self.K * self.D, f"latent has {C} channels, expected K*D = {self.K * self.D}"
        return z_BCHW.float().reshape(B, self.K, self.D, H, W).permute(1, 0, 3, 4, 2).reshape(self.K, B * H * W, self.D)

    def nearest_codes(self, z_KND):
        """Index of the closest code (squared Euclidean) for every vector: (K, N).

        Always in float32, also under autocast: half-precision distances would pick other codes than the float32
        pass that builds the token cache."""
        with torch.autocast(z_KND.device.type, enabled=False):
            return self._distances(z_KND).argmin(-1)

    def _distances(self, z_KND):
        """||z||^2 - 2 z.e + ||e||^2 for every vector and code: (K, N, V)."""
        return (z_KND.pow(2).sum(-1, keepdim=True)
                - 2 * torch.bmm(z_KND, self.codebook_KVD.transpose(1, 2))
                + self.codebook_KVD.pow(2).sum(-1).unsqueeze(1))

    def quantize(self, z_BCHW):
        """Latent -> token grid idx_BHWK."""
        B, _, H, W = z_BCHW.shape
        idx_KN = self.nearest_codes(self._split(z_BCHW))
        return idx_KN.reshape(self.K, B, H, W).permute(1, 2, 3, 0)

    def lookup(self, idx_BHWK):
        """Token grid -> quantized latent q_BCHW with channels ordered [codebook 0 | codebook 1 | ...]."""
        B, H, W, K = idx_BHWK.shape
        q_BHWKD = torch.stack([F.embedding(idx_BHWK[..., k], self.codebook_KVD[k]) for k in range(K)], dim=3)
        return q_BHWKD.reshape(B, H, W, K * self.D).permute(0, 3, 1, 2).contiguous()

    # --- training ---------------------------------------------------------------------------------------------
    def forward(self, z_BCHW):
        """Returns (straight-through q_BCHW, idx_BHWK, commitment loss, per-codebook perplexity (K,)).

        Runs in float32 even under autocast (codebook statistics and distances need the precision)."""
        with torch.autocast(z_BCHW.device.type, enabled=False):
            return self._forward_fp32(z_BCHW.float())

    def _forward_fp32(self, z_BCHW):
        if self.training and not bool(self.initialized):
            self._init_from(self._split(z_BCHW.detach()))
        idx_BHWK = self.quantize(z_BCHW.detach())
        q_BCHW = self.lookup(idx_BHWK)
        commitment = F.mse_loss(z_BCHW, q_BCHW.detach())
        if self.training:
            self._ema_update(self._split(z_BCHW.detach()), idx_BHWK.permute(3, 0, 1, 2).reshape(self.K, -1))
        q_st_BCHW = z_BCHW + (q_BCHW - z_BCHW).detach()  # straight-through: gradients pass to the encoder as-is
        return q_st_BCHW, idx_BHWK, commitment, self.perplexity(idx_BHWK)

    @torch.no_grad()
    def _init_from(self, z_KND):
        """Start the codebooks on random encoder outputs, so no code begins far away from the data."""
        for k in range(self.K):
            self.codebook_KVD[k] = self._random_rows(z_KND[k], self.V)
        self.ema_sum_KVD.copy_(self.codebook_KVD)
        self.ema_count_KV.fill_(1.0)
        self.initialized.fill_(True)
        self._take_codebooks_of_rank0()

    @torch.no_grad()
    def _take_codebooks_of_rank0(self):
        """Every process adopts rank 0's codebooks and EMA statistics (after codes were started on random rows)."""
        if _distributed():
            for buffer in (self.codebook_KVD, self.ema_sum_KVD, self.ema_count_KV):
                dist.broadcast(buffer, src=0)

    @staticmethod
    def _random_rows(z_ND, n, weight_N=None):
        """n of the vectors z_ND, uniformly or in proportion to weight_N, each nudged off its vector."""
        pick = (torch.randint(len(z_ND), (n,), device=z_ND.device) if weight_N is None
                else torch.multinomial(weight_N, n, replacement=True))
        return z_ND[pick] + 1e-3 * torch.randn(n, z_ND.shape[1], device=z_ND.device)

    @torch.no_grad()
    def _ema_update(self, z_KND, idx_KN, weight_KN=None):
        """Move each code towards the mean of its vectors. weight_KN, if given, counts vector n as weight_KN[k, n]
        assignments instead of one (in the counts, the sums and the draw of restarted codes)."""
        onehot_KNV = F.one_hot(idx_KN, self.V).float()
        if weight_KN is not None:
            onehot_KNV = onehot_KNV * weight_KN.unsqueeze(-1)
        count_KV = onehot_KNV.sum(1)
        sum_KVD = torch.bmm(onehot_KNV.transpose(1, 2), z_KND)
        if _distributed():  # the statistics of the global batch, identical on every process
            dist.all_reduce(count_KV)
            dist.all_reduce(sum_KVD)
        self.ema_count_KV.mul_(self.decay).add_(count_KV, alpha=1 - self.decay)
        self.ema_sum_KVD.mul_(self.decay).add_(sum_KVD, alpha=1 - self.decay)
        # Laplace smoothing keeps a code with a tiny count from dividing by ~0
        total_K1 = self.ema_count_KV.sum(1, keepdim=True)
        smoothed_KV = (self.ema_count_KV + self.eps) / (total_K1 + self.V * self.eps) * total_K1
        self.codebook_KVD.copy_(self.ema_sum_KVD / smoothed_KV.unsqueeze(-1))
        self._restart_dead_codes(z_KND, weight_KN)

    @torch.no_grad()
    def _restart_dead_codes(self, z_KND, weight_KN=None):
        """A code assigned less than `dead_threshold` times per batch (EMA) moves onto a random encoder output."""
        restarted = False
        for k in range(self.K):
            dead = self.ema_count_KV[k] < self.dead_threshold
            n_dead = int(dead.sum())
            if n_dead:
                fresh_ND = self._random_rows(z_KND[k], n_dead, None if weight_KN is None else weight_KN[k])
                self.codebook_KVD[k, dead] = fresh_ND
                self.ema_sum_KVD[k, dead] = fresh_ND * self.dead_threshold
                self.ema_count_KV[k, dead] = self.dead_threshold
                restarted = True
        if restarted:  # the same codes are dead on every process (same statistics); rank 0's fresh rows win
            self._take_codebooks_of_rank0()

    def perplexity(self, idx_BHWK):
        """exp(entropy) of each codebook's code distribution in this batch: V means all codes used evenly."""
        counts_KV = torch.stack([torch.bincount(idx_BHWK[..., k].flatten(), minlength=self.V)
                                 for k in range(idx_BHWK.shape[-1])]).float()
        p_KV = counts_KV / counts_KV.sum(1, keepdim=True)
        return torch.exp(-(p_KV * torch.log(p_KV.clamp_min(1e-10))).sum(1))


def split_scales(tokens_BL, scales):
    """A multi-scale token sequence (scales one after the other, each in raster order) -> [idx_Bss, ...]; a shorter
    sequence gives its whole scales only."""
    idx_list, start = [], 0
    for s in scales:
        if start + s * s > tokens_BL.shape[1]:
            break
        idx_list.append(tokens_BL[:, start:start + s * s].reshape(-1, s, s))
        start += s * s
    return idx_list


class MultiScaleResidualQuantizer(nn.Module):
    """VAR's tokenizer (Tian et al. 2024, Algorithm 1): one latent f_BDhw becomes K token maps of growing size.

    For scales s_1 < ... < s_K = h: the residual r = f - f_hat is area-downsampled to s_k x s_k, quantized with
    **one codebook shared by all scales**, looked up, upsampled back to h x w (bicubic, as the paper), passed through
    that scale's light refinement phi_k (a 3x3 conv mixed in with ratio phi_ratio; one per scale, since at this size
    they cost ~2k parameters each), and added to f_hat. The decoder sees f_hat, the sum of all scales, and so decoding
    any prefix of the scale list gives a coarser image of the same image.

    The codebook is an EMA codebook with dead-code restarts (the MultiCodebookQuantizer with K = 1), fed with the
    residual vectors of every scale. How they count is `scale_weighting`:
      - "vectors": each residual vector once. A 1x1 map gives one vector per image and the finest map h*h, and a
        code stays alive only while it is assigned often enough per batch, so the coarse scales can keep only a few
        codes alive: they collapse onto a handful of the shared codes.
      - "scales": each scale counts as much as any other (vector weight = vectors in all scales / (K * vectors in
        its scale)), in the EMA counts and sums and in the draw of restarted codes, so the coarse scales can hold
        their share of the codebook. The total count per batch is unchanged, so dead_code_threshold keeps its scale. The encoder gets the commitment loss and the straight-through gradient; the
    phi convs learn from ||f_hat - sg(f)||^2. As in the single-scale quantizer, `lookup` is the one path from
    indices to latents, used by the training pass and by decoding, so decode(encode(x)) is the training output.
    """

    def __init__(self, scales, codebook_size, code_dim, phi_ratio=0.5, ema_decay=0.99, dead_code_threshold=1.0,
                 commitment_weight=0.25, scale_weighting="scales"):
        super().__init__()
        self.scales, self.V, self.D, self.phi_ratio = tuple(scales), codebook_size, code_dim, phi_ratio
        self.commitment_weight, self.scale_weighting = commitment_weight, scale_weighting
        self.codebook = MultiCodebookQuantizer(1, codebook_size, code_dim, ema_decay, dead_code_threshold)
        self.phis = nn.ModuleList(nn.Conv2d(code_dim, code_dim, 3, padding=1) for _ in self.scales)

    # --- resizing and the per-scale contribution ----------------------------------------------------------------
    @staticmethod
    def downsample(f_BDHW, size):
        return f_BDHW if f_BDHW.shape[-1] == size else F.interpolate(f_BDHW, size=(size, size), mode="area")

    @staticmethod
    def upsample(q_BDss, size):
        return q_BDss if q_BDss.shape[-1] == size else F.interpolate(q_BDss, size=(size, size), mode="bicubic")

    def contribution(self, k, idx_Bss):
        """What scale k adds to f_hat: phi_k(upsample(codes)), (B, D, h, h)."""
        q_BDss = F.embedding(idx_Bss, self.codebook.codebook_KVD[0]).permute(0, 3, 1, 2)
        h_BDHW = self.upsample(q_BDss, self.scales[-1])
        return (1 - self.phi_ratio) * h_BDHW + self.phi_ratio * self.phis[k](h_BDHW)

    def _vectors(self, r_BDss):
        """(B, D, s, s) -> (1, B*s*s, D), the layout the shared codebook works on."""
        return r_BDss.permute(0, 2, 3, 1).reshape(1, -1, self.D)

    # --- the two directions -------------------------------------------------------------------------------------
    def quantize(self, z_BDHW, record=None):
        """Latent -> list of K index maps idx_Bss (coarse to fine). `record`, if a list, receives each scale's
        (residual vectors, indices) for the EMA update."""
        f_rest = z_BDHW.detach().float()
        idx_list = []
        for k, s in enumerate(self.scales):
            r_1ND = self._vectors(self.downsample(f_rest, s))
            idx_1N = self.codebook.nearest_codes(r_1ND)
            idx_list.append(idx_1N.reshape(-1, s, s))
            if record is not None:
                record.append((r_1ND, idx_1N))
            f_rest = f_rest - self.contribution(k, idx_list[-1]).detach()
        return idx_list

    def lookup(self, idx_list):
        """Index maps of the first n <= K scales -> f_hat_BDHW, the sum of their contributions."""
        f_hat = 0
        for k, idx_Bss in enumerate(idx_list):
            f_hat = f_hat + self.contribution(k, idx_Bss)
        return f_hat

    def partial_sums(self, idx_list):
        """f_hat after each scale: [f_hat_1, ..., f_hat_n] (what VAR's teacher forcing and sampling read)."""
        sums, f_hat = [], 0
        for k, idx_Bss in enumerate(idx_list):
            f_hat = f_hat + self.contribution(k, idx_Bss)
            sums.append(f_hat)
        return sums

    # --- training -----------------------------------------------------------------------------------------------
    def forward(self, z_BDHW):
        """Returns (straight-through f_hat_BDHW, idx_list, loss, per-scale perplexity (K,)), in float32."""
        with torch.autocast(z_BDHW.device.type, enabled=False):
            f = z_BDHW.float()
            if self.training and not bool(self.codebook.initialized):
                self.codebook._init_from(self._vectors(f.detach()))
            record = []
            idx_list = self.quantize(f, record)
            f_hat = self.lookup(idx_list)
            # The VQ-VAE weighs this by beta (commitment_weight): beta * ||f - sg(f_hat)||^2 pulls the encoder
            # towards its codes, and ||f_hat - sg(f)||^2 (weight 1) trains the phi convs.
            loss = F.mse_loss(f, f_hat.detach()) + F.mse_loss(f_hat, f.detach()) / self.commitment_weight
            if self.training:
                self.codebook._ema_update(torch.cat([r for r, _ in record], 1), torch.cat([i for _, i in record], 1),
                                          self._vector_weights([i for _, i in record]))
            f_hat_st = f + (f_hat - f).detach()
            return f_hat_st, idx_list, loss, self.perplexity(idx_list)

    def _vector_weights(self, idx_per_scale):
        """How much each scale's residual vectors count in the codebook's statistics: None (each once) or (1, N)."""
        if self.scale_weighting == "vectors":
            return None
        sizes = [idx.numel() for idx in idx_per_scale]
        total = sum(sizes)
        return torch.cat([torch.full((n,), total / (len(sizes) * n), device=idx_per_scale[0].device)
                          for n in sizes])[None]

    def perplexity(self, idx_list):
        """exp(entropy) of the code distribution at each scale in this batch."""
        out = []
        for idx in idx_list:
            p_V = torch.bincount(idx.flatten(), minlength=self.V).float()
            p_V = p_V / p_V.sum()
            out.append(torch.exp(-(p_V * torch.log(p_V.clamp_min(1e-10))).sum()))
        return torch.stack(out)
