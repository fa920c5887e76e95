"""VAR: next-scale prediction (Tian et al. 2024) over the multi-scale residual tokenizer's token maps.

Sequence layout: the token maps of scales s_1 < ... < s_K, one after the other, each in raster order:
L = s_1^2 + ... + s_K^2 tokens (30 for scales 1, 2, 3, 4). Position i of the model *input* predicts token i:
  - the first s_1^2 inputs are the start token: the class embedding (0..num_classes-1, or `num_classes` = "no class");
  - the inputs of scale k+1 are the accumulated features of scales <= k, f_hat_k, area-downsampled to s_{k+1} x s_{k+1}
    and projected to d_model (teacher forcing, as the paper's `idxBl_to_var_input`);
  - plus a learned embedding of the scale (level) and of the absolute position.
Attention is block-causal: a token of scale k sees every token of scales <= k and nothing later, so one forward step
predicts all tokens of a scale at once, and K steps draw an image. Each block is conditioned on the class through
adaptive layer norm (adaLN-Zero as in DiT; VAR uses the same shift/scale/gate form), and the class is dropped to
"no class" in training so classifier-free guidance works.

The model keeps a frozen copy of the tokenizer's quantizer (shared codebook + phi convs): it needs them to turn the
tokens of scale k into the inputs of scale k+1, at training and at sampling time alike.
"""
import math

import torch
import torch.nn as nn

from config import VARConfig
from models.prior import Prior, guide, progressive_scale, register, sample_from_logits
from models.quantizer import MultiScaleResidualQuantizer, split_scales
from models.transformer import SelfAttention, block_flops, mlp


def modulate(x_BTD, shift_BD, scale_BD):
    return x_BTD * (1 + scale_BD[:, None]) + shift_BD[:, None]


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block whose layer norms are shifted, scaled and gated by the class (adaLN-Zero)."""

    def __init__(self, d_model, n_head, mlp_ratio, dropout):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.ln2 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.attn = SelfAttention(d_model, n_head, dropout, causal=False)  # the mask comes from the caller
        self.mlp = mlp(d_model, mlp_ratio, dropout)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 6 * d_model))

    def forward(self, x_BTD, cond_BD, attn_mask=None, cache=None, start=0):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond_BD).chunk(6, dim=-1)
        x_BTD = x_BTD + gate1[:, None] * self.attn(modulate(self.ln1(x_BTD), shift1, scale1), cache, start, attn_mask)
        return x_BTD + gate2[:, None] * self.mlp(modulate(self.ln2(x_BTD), shift2, scale2))


@register
class VAR(Prior):
    kind = "var"
    config_class = VARConfig
    multiscale_tokenizer = True
    kv_cache = True
    edits = ("inpaint", "outpaint", "complete")
    progressive_guidance = True  # guidance ramps up over the scales (guidance_at)

    def __init__(self, cfg, scales, codebook_size, code_dim, phi_ratio=0.5):
        super().__init__()
        self.cfg, self.scales, self.V, self.code_dim = cfg, tuple(scales), codebook_size, code_dim
        self.L = sum(s * s for s in self.scales)
        self.first_len = self.scales[0] ** 2
        d = cfg.d_model
        self.tokenizer = MultiScaleResidualQuantizer(scales, codebook_size, code_dim, phi_ratio).requires_grad_(False)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, d)  # last id = "no class"
        self.word_proj = nn.Linear(code_dim, d)
        self.level_emb = nn.Embedding(len(self.scales), d)
        self.pos_emb = nn.Parameter(torch.zeros(self.L, d))
        self.pos_start = nn.Parameter(torch.zeros(self.first_len, d))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(AdaLNBlock(d, cfg.n_head, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(d, elementwise_affine=False)
        self.ada_f = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.head = nn.Linear(d, codebook_size)
        level_L = torch.cat([torch.full((s * s,), k) for k, s in enumerate(self.scales)])
        self.register_buffer("level_L", level_L, persistent=False)
        # block-causal: query i may attend key j iff j's scale <= i's scale
        self.register_buffer("mask_LL", level_L[None, :] <= level_L[:, None], persistent=False)
        self._init_weights()

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.pos_start, std=0.02)
        for ada in [block.ada for block in self.blocks] + [self.ada_f]:  # adaLN-Zero: every block starts as identity
            nn.init.zeros_(ada[-1].weight)
            nn.init.zeros_(ada[-1].bias)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, std=0.02 / math.sqrt(2 * self.cfg.n_layer))

    @classmethod
    def tokenizer_args(cls, tokens):
        return {"scales": tuple(tokens["scales"]), "codebook_size": tokens["codebook_size"],
                "code_dim": tokens["code_dim"], "phi_ratio": tokens["phi_ratio"]}

    def adopt(self, vqvae):
        """A frozen copy of the trained multi-scale quantizer (shared codebook + phi convs)."""
        self.tokenizer.load_state_dict(vqvae.quantizer.state_dict())

    @property
    def title(self):
        return "VAR (next-scale)"

    def train(self, mode=True):  # the frozen tokenizer copy never trains
        super().train(mode)
        self.tokenizer.eval()
        return self

    # --- inputs -------------------------------------------------------------------------------------------------
    def start_input(self, cond_BD):
        """The inputs of scale 0: the class embedding at each of its s_1^2 positions, (B, s_1^2, d)."""
        return cond_BD[:, None].expand(-1, self.first_len, -1) + self.pos_start[None]

    def next_scale_input(self, f_hat_BDHW, k):
        """Inputs of scale k (k >= 1): f_hat of scales < k, area-downsampled to s_k, as (B, s_k^2, d)."""
        f_BDss = self.tokenizer.downsample(f_hat_BDHW, self.scales[k])
        return self.word_proj(f_BDss.flatten(2).transpose(1, 2))

    def inputs(self, cond_BD, idx_list):
        """Teacher-forced inputs for scales 0 .. len(idx_list) (capped at K-1), given the token maps idx_list."""
        x = [self.start_input(cond_BD)]
        partial = self.tokenizer.partial_sums(idx_list[:len(self.scales) - 1])
        x += [self.next_scale_input(f_hat, k + 1) for k, f_hat in enumerate(partial)]
        x_BTD = torch.cat(x, dim=1)
        T = x_BTD.shape[1]
        return x_BTD + self.level_emb(self.level_L[:T]) + self.pos_emb[:T]

    def _run(self, x_BTD, cond_BD, attn_mask=None, caches=None, start=0):
        x_BTD = self.drop(x_BTD)
        for i, block in enumerate(self.blocks):
            x_BTD = block(x_BTD, cond_BD, attn_mask, None if caches is None else caches[i], start)
        shift, scale = self.ada_f(cond_BD).chunk(2, dim=-1)
        return self.head(modulate(self.ln_f(x_BTD), shift, scale))

    # --- training / scoring -------------------------------------------------------------------------------------
    def forward(self, tokens_BL, class_B):
        """Teacher-forced logits_BLV: logits[:, i] predicts tokens[:, i] from the class and all coarser scales."""
        cond_BD = self.class_emb(class_B)
        with torch.no_grad():  # the inputs come from the frozen tokenizer
            idx_list = split_scales(tokens_BL, self.scales)
        x_BTD = self.inputs(cond_BD, idx_list[:-1])
        T = x_BTD.shape[1]
        return self._run(x_BTD, cond_BD, self.mask_LL[:T, :T])

    def loss(self, tokens_BL, class_B):
        return self.cross_entropy(self.forward(tokens_BL, class_B), tokens_BL)

    def flops_per_sequence(self):
        """The code vectors' projection into the model, n_layer block-causal blocks over the L tokens of all scales
        (each with its class-conditioned adaLN projection, once per image), the final adaLN and the head. The frozen
        tokenizer's phi convolutions that build the inputs are left out (they run once per scale, not per token)."""
        d = self.cfg.d_model
        blocks = self.cfg.n_layer * (block_flops(self.L, self.L, d, self.cfg.mlp_ratio) + 2 * d * 6 * d)
        return 2 * self.L * self.code_dim * d + blocks + 2 * d * 2 * d + 2 * self.L * d * self.V

    def forward_passes(self, steps=None):
        return len(self.scales)

    # --- sampling -----------------------------------------------------------------------------------------------
    def guidance_at(self, k, guidance):
        """The guidance scale at scale k: 1 at the first scale, guidance at the last (the reference code's
        `t = cfg * si / (num_stages - 1)`, in this repo's uncond + s * (cond - uncond) form)."""
        if not self.progressive_guidance or len(self.scales) == 1:
            return guidance
        return progressive_scale(guidance, k / (len(self.scales) - 1))

    def _sample(self, class_B, temperature, top_k, guidance, generator, use_cache=True, known_BL=None,
                known_mask_BL=None):
        """Draw tokens_BL scale by scale: K forward steps, one per scale, with a KV cache across scales.

        guidance != 1: classifier-free guidance, uncond + s * (cond - uncond), the unconditional copy in the same
        batch. known_BL / known_mask_BL (True = keep): zero-shot editing; kept tokens are teacher-forced at every
        scale (VAR's in/outpainting), the rest is drawn.
        """
        B = class_B.shape[0]
        classes, guided = self.guided_classes(class_B, guidance)
        cond_BD = self.class_emb(classes)
        caches = [{"max_len": self.L} for _ in self.blocks] if use_cache else None
        idx_list, f_hat, start = [], 0, 0
        for k, s in enumerate(self.scales):
            n = s * s
            if use_cache:  # feed only this scale's inputs; it sees the cached coarser scales without a mask
                x = self.start_input(cond_BD) if k == 0 else self.next_scale_input(f_hat, k)
                x = x + self.level_emb(self.level_L[start:start + n]) + self.pos_emb[start:start + n]
                logits = self._run(x, cond_BD, None, caches, start)
            else:  # recompute every coarser scale (the slow path, kept for tests and benchmarks)
                both = [torch.cat([i, i]) for i in idx_list] if guided else idx_list
                x = self.inputs(cond_BD, both)
                logits = self._run(x, cond_BD, self.mask_LL[:start + n, :start + n])[:, start:]
            logits = logits.float()
            if guided:
                logits = guide(logits, self.guidance_at(k, guidance))
            idx_Bn = sample_from_logits(logits.reshape(B * n, self.V), temperature, top_k, generator).view(B, n)
            if known_BL is not None:
                keep = known_mask_BL[:, start:start + n]
                idx_Bn = torch.where(keep, known_BL[:, start:start + n], idx_Bn)
            idx_list.append(idx_Bn.view(B, s, s))
            contribution = self.tokenizer.contribution(k, idx_list[-1])
            f_hat = f_hat + (torch.cat([contribution, contribution]) if guided else contribution)
            start += n
        return torch.cat([i.reshape(B, -1) for i in idx_list], dim=1)
