"""Evaluation metrics (ROS-free).

``image_metrics``: per-image PSNR and SSIM on ``[N, C, H, W]`` tensors in ``[0, max_val]``.
``worldscore``: export a rollout directory in WorldScore's output layout.
``closed_loop``: closed-loop (last frame vs input frame) and novel-view metrics.
``efficiency``: the paper's Figure 5 study (latent memory vs RGB point-cloud cache).
Protocols and commands: ``docs/evaluation.md``.
"""

from mirage_core.eval.closed_loop import (
    ClosedLoopConfig,
    closed_loop_eval,
    closed_loop_eval_fn,
    main_closed_loop,
    main_novel_view,
    mirror_trajectory,
    novel_view_eval,
)
from mirage_core.eval.efficiency import EfficiencyConfig, main_efficiency, run_efficiency_study
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
from mirage_core.eval.worldscore import export_worldscore, main_export_worldscore

__all__ = [
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "ClosedLoopConfig",
    "EfficiencyConfig",
    "closed_loop_eval",
    "closed_loop_eval_fn",
    "export_worldscore",
    "gaussian_window",
    "main_closed_loop",
    "main_efficiency",
    "main_export_worldscore",
    "main_novel_view",
    "mirror_trajectory",
    "novel_view_eval",
    "psnr",
    "run_efficiency_study",
    "ssim",
    "ssim_reference",
    "uint8_to_float",
]
