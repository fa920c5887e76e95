"""VQ-VAE: a conv encoder down to an H x W latent, a quantizer, and a conv decoder back to the image size.

The image size and channels come from the dataset (cfg.image_size, cfg.image_channels). The number of stride-2 steps
follows from the grid size alone (28 -> 14 -> 7 -> 4 -> 2 -> 1, 32 -> 16 -> 8 -> 4 -> 2 -> 1), so every reachable
grid needs no code change. The decoder mirrors the encoder, upsampling to the exact sizes the encoder went through.

The quantizer is chosen by config (`vqvae.quantizer`, the QUANTIZERS registry below): K parallel EMA codebooks (vq,
the default), residual VQ (rvq) or finite scalar quantization (fsq), each giving K tokens per position, idx_BHWK; or
VAR's multi-scale residual quantizer (`vqvae.scales` set; tokens: a list of index maps idx_Bss, coarse to fine). Either way the priors see a
flat token sequence tokens_BL (`to_sequence` / `from_sequence`): raster order with codebooks innermost, or the
scales one after the other, each in raster order.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.discriminator import adaptive_weight, generator_loss
from models.fsq import FiniteScalarQuantizer
from models.quantizer import MultiCodebookQuantizer, MultiScaleResidualQuantizer, split_scales
from models.residual_vq import ResidualQuantizer
from models.ssim import ssim_per_image

# vqvae.quantizer -> (the quantizer of a VQVAEConfig, the latent channels it reads). Each produces idx_BHWK with K =
# num_codebooks tokens per position from V = codebook_size codes, and decodes them through its own `lookup`.
QUANTIZERS = {
    "vq": (lambda c: MultiCodebookQuantizer(c.num_codebooks, c.codebook_size, c.code_dim, c.ema_decay,
                                            c.dead_code_threshold),
           lambda c: c.num_codebooks * c.code_dim),
    "rvq": (lambda c: ResidualQuantizer(c.num_codebooks, c.codebook_size, c.code_dim, c.ema_decay,
                                        c.dead_code_threshold),
            lambda c: c.code_dim),
    "fsq": (lambda c: FiniteScalarQuantizer(c.num_codebooks, c.fsq_levels),
            lambda c: c.num_codebooks * len(c.fsq_levels)),
}

DECODE_CHUNK = 128  # images the decoder takes at a time when decoding tokens (VQVAE.decode)


def reachable_grid_sizes(image_size):
    """Token-grid sizes the encoder can reach: each stride-2 conv maps n -> ceil(n / 2) (28: 14, 7, 4, 2, 1;
    32: 16, 8, 4, 2, 1)."""
    sizes, n = [], image_size
    while n > 1:
        n = (n + 1) // 2
        sizes.append(n)
    return sizes


def down_sizes(image_size, grid_size):
    """Spatial sizes from the image to the grid, e.g. (28, 4) -> [28, 14, 7, 4]."""
    sizes = [image_size] + reachable_grid_sizes(image_size)
    return sizes[:sizes.index(grid_size) + 1]


def width_at(level, channels):
    """Channel width at the level-th resolution (0 = the image size); levels past the list reuse its last width."""
    return channels[min(level, len(channels) - 1)]


class ResBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(8 if channels % 8 == 0 else 1, channels), nn.SiLU(),
                                 nn.Conv2d(channels, channels, 3, padding=1),
                                 nn.GroupNorm(8 if channels % 8 == 0 else 1, channels), nn.SiLU(),
                                 nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.net(x)


class Encoder(nn.Module):
    def __init__(self, image_channels, sizes, channels, num_res_blocks, latent_channels):
        super().__init__()
        layers = [nn.Conv2d(image_channels, channels[0], 3, padding=1)]
        for level in range(len(sizes) - 1):  # each conv: n -> ceil(n / 2)
            c_in, c_out = width_at(level, channels), width_at(level + 1, channels)
            layers += [nn.SiLU(), nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)]
        c_last = width_at(len(sizes) - 1, channels)
        layers += [ResBlock(c_last) for _ in range(num_res_blocks)]
        layers += [nn.SiLU(), nn.Conv2d(c_last, latent_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x_BCHW):
        return self.net(x_BCHW)


class Decoder(nn.Module):
    def __init__(self, image_channels, sizes, channels, num_res_blocks, latent_channels):
        super().__init__()
        c_last = width_at(len(sizes) - 1, channels)
        self.stem = nn.Sequential(nn.Conv2d(latent_channels, c_last, 3, padding=1),
                                  *[ResBlock(c_last) for _ in range(num_res_blocks)])
        self.up_sizes = sizes[-2::-1]  # e.g. [7, 14, 28]
        self.ups = nn.ModuleList()
        for level in range(len(sizes) - 1, 0, -1):
            c_in, c_out = width_at(level, channels), width_at(level - 1, channels)
            self.ups.append(nn.Sequential(nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1)))
        self.head = nn.Sequential(nn.SiLU(), nn.Conv2d(channels[0], image_channels, 3, padding=1))

    def forward(self, q_BCHW):
        h = self.stem(q_BCHW)
        for size, up in zip(self.up_sizes, self.ups):
            h = up(upsample_nearest(h, size))
        return self.head(h)


def upsample_nearest(h_BCHW, size):
    """Nearest-neighbour resize to size x size. When decoding (no gradients) it picks rows and columns by index,
    which gives exactly F.interpolate's values (the same source index floor(i * in / out)) several times faster on
    CPUs, where F.interpolate was a large share of the guided sampler's time. Training keeps F.interpolate, whose
    backward is deterministic on every device (an index's backward accumulates with atomics on GPUs)."""
    if torch.is_grad_enabled():
        return F.interpolate(h_BCHW, size=(size, size), mode="nearest")
    B, C, H, W = h_BCHW.shape
    if size % H == 0 and size % W == 0:  # a whole factor (14 -> 28): repeat each pixel, one copy, no index
        f, g = size // H, size // W
        return h_BCHW[:, :, :, None, :, None].expand(B, C, H, f, W, g).reshape(B, C, size, size)
    rows = (torch.arange(size, device=h_BCHW.device) * (h_BCHW.shape[-2] / size)).floor().long()
    cols = (torch.arange(size, device=h_BCHW.device) * (h_BCHW.shape[-1] / size)).floor().long()
    return h_BCHW[:, :, rows][:, :, :, cols]


def conv_flops(module, input_BCHW):
    """Forward FLOPs per image of every Conv2d in `module` (a multiply-add counts 2: per output value, 2 x input
    channels per group x kernel height x width), read off each conv's output shape on one pass of one image.
    Activations, norms and upsampling are left out (a few percent)."""
    total = 0

    def count(conv, inputs, output_BCHW):
        nonlocal total
        per_output = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        total += 2 * output_BCHW[0].numel() * per_output

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            module(input_BCHW[:1])
    finally:
        for hook in hooks:
            hook.remove()
    return total


class VQVAE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        latent_channels = self.latent_channels
        sizes = down_sizes(cfg.image_size, cfg.grid_size)
        self.encoder = Encoder(cfg.image_channels, sizes, cfg.channels, cfg.num_res_blocks, latent_channels)
        if self.multiscale:
            self.quantizer = MultiScaleResidualQuantizer(cfg.scales, cfg.codebook_size, cfg.code_dim, cfg.phi_ratio,
                                                         cfg.ema_decay, cfg.dead_code_threshold, cfg.commitment_weight,
                                                         cfg.scale_weighting)
        else:
            self.quantizer = QUANTIZERS[cfg.quantizer][0](cfg)
        self.decoder = Decoder(cfg.image_channels, sizes, cfg.decoder_channels or cfg.channels, cfg.num_res_blocks,
                               latent_channels)

    @property
    def multiscale(self):
        return len(self.cfg.scales) > 0

    @property
    def latent_channels(self):
        """Channels of the encoder's output: what the quantizer reads (multi-scale: one code vector)."""
        return self.cfg.code_dim if self.multiscale else QUANTIZERS[self.cfg.quantizer][1](self.cfg)

    @property
    def grid_shape(self):
        """(H, W, K) of the (finest) token grid."""
        return self.cfg.grid_size, self.cfg.grid_size, self.cfg.num_codebooks

    @property
    def sequence_length(self):
        if self.multiscale:
            return sum(s * s for s in self.cfg.scales)
        H, W, K = self.grid_shape
        return H * W * K

    def flops(self):
        """Forward FLOPs per image of the encoder and of the decoder: {'encoder': ..., 'decoder': ...} (the
        quantizer's distance computations and the multi-scale phi convs are left out)."""
        c = self.cfg
        image_BCHW = torch.zeros(1, c.image_channels, c.image_size, c.image_size, device=next(self.parameters()).device)
        latent_BCHW = torch.zeros(1, self.latent_channels, c.grid_size, c.grid_size, device=image_BCHW.device)
        return {"encoder": conv_flops(self.encoder, image_BCHW), "decoder": conv_flops(self.decoder, latent_BCHW)}

    def token_info(self):
        """What a prior needs to know of this tokenizer's sequence (stored in every prior checkpoint)."""
        c = self.cfg
        return {"grid_shape": list(self.grid_shape), "codebook_size": c.codebook_size, "scales": list(c.scales),
                "code_dim": c.code_dim, "phi_ratio": c.phi_ratio}

    def to_sequence(self, idx):
        """idx_BHWK (or the multi-scale list of idx_Bss) -> tokens_BL."""
        if self.multiscale:
            return torch.cat([idx_Bss.reshape(idx_Bss.shape[0], -1) for idx_Bss in idx], dim=1)
        return idx.reshape(idx.shape[0], -1)

    def from_sequence(self, tokens_BL):
        """tokens_BL -> idx_BHWK, or the list of idx_Bss (a shorter sequence gives the first scales only)."""
        if not self.multiscale:
            return tokens_BL.reshape(tokens_BL.shape[0], *self.grid_shape)
        return split_scales(tokens_BL, self.cfg.scales)

    @torch.no_grad()
    def encode_sequence(self, x_BCHW):
        return self.to_sequence(self.encode(x_BCHW))

    @torch.no_grad()
    def decode_sequence(self, tokens_BL):
        return self.decode(self.from_sequence(tokens_BL))

    def forward(self, x_BCHW):
        """Training pass: (reconstruction, idx_BHWK, commitment loss, perplexity per codebook)."""
        z_BCHW = self.encoder(x_BCHW)
        q_BCHW, idx_BHWK, commitment, perplexity_K = self.quantizer(z_BCHW)
        return self.decoder(q_BCHW), idx_BHWK, commitment, perplexity_K

    def loss(self, x_BCHW, discriminator=None, gan_weight=0.0):
        """The training objective: reconstruction MSE + commitment_weight * commitment loss (the codebooks learn by
        EMA, not by gradient), + ssim_weight * (1 - SSIM) where it is set, and with a discriminator, + gan_weight *
        adaptive weight * its adversarial loss (models/discriminator.py). Returns (loss, {'mse', 'perplexity_K',
        'recon_BCHW' (detached), with ssim_weight 'ssim', and with a discriminator 'gan_weight', 'adversarial'})."""
        recon_BCHW, _, commitment, perplexity_K = self(x_BCHW)
        mse = F.mse_loss(recon_BCHW.float(), x_BCHW)
        loss = mse + self.cfg.commitment_weight * commitment
        parts = {"mse": mse, "perplexity_K": perplexity_K, "recon_BCHW": recon_BCHW.detach()}
        if self.cfg.ssim_weight > 0:
            ssim = ssim_per_image((recon_BCHW.float() + 1) / 2, (x_BCHW.float() + 1) / 2).mean()  # [-1,1] -> [0,1]
            loss = loss + self.cfg.ssim_weight * (1 - ssim)
            parts["ssim"] = ssim.detach()
        if discriminator is not None:
            adversarial = generator_loss(discriminator(recon_BCHW))
            weight = gan_weight * adaptive_weight(mse, adversarial, self.decoder.head[-1].weight)
            loss = loss + weight * adversarial
            parts.update(gan_weight=weight, adversarial=adversarial.detach())
        return loss, parts

    @torch.no_grad()
    def encode(self, x_BCHW):
        """Images in [-1, 1] -> token grid idx_BHWK (multi-scale: the list of idx_Bss, coarse to fine)."""
        return self.quantizer.quantize(self.encoder(x_BCHW))

    @torch.no_grad()
    def decode(self, idx):
        """Token grid -> images in [-1, 1] (not clamped). Multi-scale: any prefix of the scale list decodes, to a
        coarser image (the sum of fewer scales).

        The decoder runs on DECODE_CHUNK images at a time. Each image is decoded on its own either way (the same
        values up to float rounding: a convolution may pick another algorithm for another batch size; the default
        MNIST decoder gave the same bytes), but on CPUs a chunk's activations stay in the cache, where a batch of
        a thousand images goes through memory at every layer."""
        q_BCHW = self.quantizer.lookup(idx)
        return torch.cat([self.decoder(chunk) for chunk in q_BCHW.split(DECODE_CHUNK)])
