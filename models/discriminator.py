"""The tokenizer's adversary (Esser et al., "Taming Transformers", 2021): a small patch discriminator that scores every
patch of an image as real (> 0) or reconstructed (< 0), trained with the hinge loss. The decoder is pushed towards
patches the discriminator takes for real, which restores the stroke texture that a pure MSE decoder averages away.

Only the tokenizer's training uses it (vqvae_train.py, when vqvae_train.gan_weight > 0); it never sees a label and
classifies nothing but real vs reconstructed.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchDiscriminator(nn.Module):
    """Stride-2 4x4 convs (28 -> 14 -> 7 for MNIST) then a 3x3 conv to one logit per patch: logits_B1hw. Each logit
    sees about a 10x10 pixel patch with the default two levels, the scale of a stroke."""

    def __init__(self, image_channels, channels=(32, 64)):
        super().__init__()
        layers, c_in = [], image_channels
        for level, c_out in enumerate(channels):
            layers.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))
            if level > 0:  # no norm on the first layer (pix2pix's habit); GroupNorm: per image, so no batch coupling
                layers.append(nn.GroupNorm(8 if c_out % 8 == 0 else 1, c_out))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x_BCHW):
        return self.net(x_BCHW)


def hinge_loss(logits_real, logits_fake):
    """The discriminator's loss: real patches pushed above +1, reconstructed ones below -1."""
    return 0.5 * (F.relu(1 - logits_real.float()).mean() + F.relu(1 + logits_fake.float()).mean())


def generator_loss(logits_fake):
    """The decoder's adversarial loss: raise the discriminator's score of its reconstructions."""
    return -logits_fake.float().mean()


def adaptive_weight(reconstruction_loss, adversarial_loss, last_layer_weight, max_weight=1e4):
    """Taming's balance: ||grad of the reconstruction loss|| / ||grad of the adversarial loss||, both at the decoder's
    last layer, so the adversarial term moves that layer as strongly as the reconstruction term whatever the two
    losses' scales (a constant; no gradient flows through it)."""
    rec_grad, = torch.autograd.grad(reconstruction_loss, last_layer_weight, retain_graph=True)
    adv_grad, = torch.autograd.grad(adversarial_loss, last_layer_weight, retain_graph=True)
    return (rec_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(0, max_weight).detach()
