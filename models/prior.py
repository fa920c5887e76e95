"""What every token prior shares, and the registry the scripts read.

A prior is a transformer over a tokenizer's flat token sequence tokens_BL, conditioned on a class id (0 ..
num_classes - 1, or `no_class` for unconditional). Each prior is one file in models/ holding one subclass of `Prior`
decorated with `@register`; its config section in config.py is named after its `kind` (plus `<kind>_train`).

Scripts never ask a prior for its name: they read what it can do from these class attributes.

    multiscale_tokenizer  needs VAR's multi-scale residual tokenizer (else the single-scale grid)
    exact_likelihood      `loss` is the exact cross-entropy of the tokens (else a training loss, e.g. denoising)
    kv_cache              `sample(use_cache=False)` is a real, slower alternative path
    edits                 the `--edit` kinds `sample(known_BL=, known_mask_BL=)` can do
    reverse_process       `sample(return_process=True)` also returns the states of its reverse process
    sampling_steps        `sample(steps=)` sets its number of reverse steps

A subclass implements `loss(tokens_BL, class_B)`, `forward_passes(steps)` and `_sample(class_B, ...)` taking the
shared options plus one keyword per capability it declares (use_cache, known_BL/known_mask_BL, return_process,
steps); `sample` checks the options against the capabilities and passes on only those.
"""
import importlib
import pkgutil

import torch
import torch.nn as nn
import torch.nn.functional as F

_REGISTRY = {}


def register(cls):
    """Class decorator: make a Prior subclass available under its `kind` to every script."""
    _REGISTRY[cls.kind] = cls
    return cls


def registered():
    """{kind: class} of every prior in models/ (each module there is imported once, so each registers itself)."""
    import models
    for module in pkgutil.iter_modules(models.__path__):
        importlib.import_module(f"models.{module.name}")
    return dict(_REGISTRY)


def prior_class(kind):
    priors = registered()
    if kind not in priors:
        raise KeyError(f"unknown prior kind {kind!r}; expected one of {', '.join(priors)}")
    return priors[kind]


def priors_with(test):
    """The kinds of the registered priors whose class passes `test`, e.g. lambda c: c.reverse_process."""
    return [kind for kind, cls in registered().items() if test(cls)]


def filtered_probs(logits_V, temperature=1.0, top_k=0):
    """Softmax of logits / temperature over the last dim, restricted to the top_k codes when top_k > 0."""
    logits_V = logits_V / temperature
    if top_k and top_k < logits_V.shape[-1]:
        kth = torch.topk(logits_V, top_k, dim=-1).values[..., -1:]
        logits_V = logits_V.masked_fill(logits_V < kth, float("-inf"))
    return torch.softmax(logits_V, dim=-1)


def sample_from_logits(logits_BV, temperature=1.0, top_k=0, generator=None):
    return torch.multinomial(filtered_probs(logits_BV, temperature, top_k), 1, generator=generator)[:, 0]


def progressive_scale(guidance, done):
    """Progressive classifier-free guidance: the scale once a share `done` in [0, 1] of the coarse-to-fine order has
    run, rising linearly from 1 (plain conditional) to guidance (VAR's reference code over scales, Muse over
    decoding steps). Strong guidance on the first decisions, which lay out the image, makes every sample of a class
    alike; the later ones only sharpen."""
    return 1.0 + (guidance - 1.0) * done


def guide(logits_2BxV, guidance):
    """Classifier-free guidance: the batch holds the conditional half, then the unconditional half;
    returns uncond + s * (cond - uncond)."""
    cond, uncond = logits_2BxV.chunk(2)
    return uncond + guidance * (cond - uncond)


class Prior(nn.Module):
    kind = None                   # registry key: --prior value, config section, checkpoint 'kind'
    config_class = None           # its config section's dataclass (config.py), rebuilt from a checkpoint's dict
    results_folder = None         # _results/<folder>/ of transformer_train.py (default: the checkpoint name)
    multiscale_tokenizer = False
    exact_likelihood = True
    kv_cache = False
    edits = ()
    reverse_process = False
    sampling_steps = False

    # --- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_tokenizer(cls, cfg, tokens, vqvae=None):
        """The one constructor, for training and loading alike: cfg is the prior's config section, tokens the
        tokenizer's description (VQVAE.token_info(), stored in every prior checkpoint). With the trained `vqvae`
        at hand, a prior that keeps part of it (VAR's quantizer) copies it (`adopt`)."""
        model = cls(cfg, **cls.tokenizer_args(tokens))
        if vqvae is not None:
            model.adopt(vqvae)
        return model

    @classmethod
    def tokenizer_args(cls, tokens):
        """Constructor arguments from the tokenizer's description; the single-scale raster priors' default."""
        return {"grid_shape": tuple(tokens["grid_shape"]), "codebook_size": tokens["codebook_size"]}

    def adopt(self, vqvae):
        """Copy what the prior keeps of its trained tokenizer (nothing, by default)."""

    @classmethod
    def checkpoint_name(cls, cfg):
        """File stem of its checkpoint (checkpoints/<name>.pt) for a config section; variants override it."""
        return cls.kind

    @property
    def name(self):
        return self.checkpoint_name(self.cfg)

    @property
    def output_prefix(self):
        """generator.py's file-name prefix: '<checkpoint name>_'."""
        return f"{self.name}_"

    @property
    def title(self):
        """How tables and logs name it."""
        return self.kind

    # --- classes --------------------------------------------------------------------------------------------------
    @property
    def no_class(self):
        """The class id meaning "no class": one past the last real class."""
        return self.cfg.num_classes

    def drop_classes(self, class_B, generator):
        """Training labels with a share cfg.class_dropout replaced by "no class", which teaches guidance."""
        dropped = torch.rand(len(class_B), generator=generator) < self.cfg.class_dropout
        class_B = class_B.clone()
        class_B[dropped] = self.no_class
        return class_B

    def guided_classes(self, class_B, guidance):
        """(classes to run, guided): guidance doubles the batch with an unconditional copy; an all-"no class" batch
        or guidance 1 needs none."""
        guided = guidance != 1.0 and bool((class_B != self.no_class).any())
        if guided:
            class_B = torch.cat([class_B, torch.full_like(class_B, self.no_class)])
        return class_B, guided

    # --- training -------------------------------------------------------------------------------------------------
    def cross_entropy(self, logits_BLV, tokens_BL):
        """Mean cross-entropy (nats per token), computed in float32 even under autocast."""
        return F.cross_entropy(logits_BLV.float().reshape(-1, self.V), tokens_BL.reshape(-1))

    def loss(self, tokens_BL, class_B):
        raise NotImplementedError

    def flops_per_sequence(self):
        """Forward FLOPs of the transformer over one whole token sequence (what a training step computes per image,
        before the backward pass's 2x), counted from the config (models.transformer.block_flops)."""
        raise NotImplementedError

    def sampling_flops(self, steps=None, guidance=1.0):
        """FLOPs of drawing one image's tokens. With a KV cache each token passes through the transformer once: about
        one whole-sequence forward. Without one, every one of forward_passes(steps) passes runs the whole sequence.
        Guidance runs a conditional and an unconditional sequence."""
        passes = 1 if self.kv_cache else self.forward_passes(steps)
        return passes * self.flops_per_sequence() * (2 if guidance != 1 else 1)

    def forward_passes(self, steps=None):
        """Transformer evaluations per image when sampling (guidance doubles the batch, not the count)."""
        raise NotImplementedError

    # --- sampling -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, class_B, temperature=1.0, top_k=0, guidance=1.0, generator=None, *, use_cache=True,
               known_BL=None, known_mask_BL=None, steps=None, return_process=False):
        """Draw tokens_BL for the given class ids (`no_class` for unconditional).

        temperature / top_k filter each draw; guidance != 1 mixes conditional and unconditional logits
        (classifier-free guidance). use_cache=False takes the slow path without a KV cache, where the prior has one.
        known_BL / known_mask_BL (True = keep): editing, for the priors with `edits`. steps: reverse steps, for the
        priors with `sampling_steps` (None = their config). return_process=True: also the reverse process's states.
        """
        options = {}
        if self.kv_cache:
            options["use_cache"] = use_cache
        if (known_BL is None) != (known_mask_BL is None):
            raise ValueError("known_BL and known_mask_BL go together")
        if known_BL is not None:
            if not self.edits:
                raise ValueError(f"the {self.kind} prior cannot keep known tokens (it supports no edits)")
            options.update(known_BL=known_BL, known_mask_BL=known_mask_BL)
        if steps is not None:
            if not self.sampling_steps:
                raise ValueError(f"the {self.kind} prior has no reverse steps to set")
            options["steps"] = steps
        if return_process:
            if not self.reverse_process:
                raise ValueError(f"the {self.kind} prior has no reverse process to return")
            options["return_process"] = True
        return self._sample(class_B, temperature=temperature, top_k=top_k, guidance=guidance, generator=generator,
                            **options)
