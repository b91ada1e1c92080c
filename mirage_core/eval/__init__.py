"""Evaluation metrics (ROS-free).

``image_metrics``: per-image PSNR and SSIM on ``[N, C, H, W]`` tensors in ``[0, max_val]``.
"""

from mirage_core.eval.image_metrics import (
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW,
    gaussian_window,
    psnr,
    ssim,
    ssim_reference,
    uint8_to_float,
)

__all__ = [
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "gaussian_window",
    "psnr",
    "ssim",
    "ssim_reference",
    "uint8_to_float",
]
