"""SSIM (Wang et al. 2004) as most papers compute it: an 11 x 11 Gaussian window with sigma 1.5 over pixels in
[0, 1], C1 = (0.01)^2, C2 = (0.03)^2, means over the valid window positions and the channels.

One formula for two uses: the tokenizer's structural loss term (`vqvae.ssim_weight`, differentiable, in float32)
and the metric `evaluate.py --reconstructions` reports (pipeline/tokenizer_metrics.py, in float64).
"""
import torch
import torch.nn.functional as F

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5


def gaussian_window(size=SSIM_WINDOW, sigma=SSIM_SIGMA):
    """The normalised 2-D Gaussian (size x size) SSIM averages with, in float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_per_image(a_BCHW, b_BCHW):
    """SSIM of each image pair (pixels in [0, 1]) in the inputs' dtype: (B,). Autocast is off inside: the constants
    C1 and C2 are below what half precision resolves."""
    C = a_BCHW.shape[1]
    window_C1ww = gaussian_window().to(a_BCHW.device, a_BCHW.dtype).expand(C, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(x_BCHW):
        return F.conv2d(x_BCHW, window_C1ww, groups=C)

    with torch.autocast(a_BCHW.device.type, enabled=False):
        mu_a, mu_b = blur(a_BCHW), blur(b_BCHW)
        var_a, var_b = blur(a_BCHW * a_BCHW) - mu_a ** 2, blur(b_BCHW * b_BCHW) - mu_b ** 2
        cov = blur(a_BCHW * b_BCHW) - mu_a * mu_b
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        ssim_BCHW = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ssim_BCHW.flatten(1).mean(1)
