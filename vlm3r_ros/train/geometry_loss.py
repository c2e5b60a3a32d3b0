"""CUT3R's training objective for one rolled-out sequence.

``ConfLoss(Regr3DPose(L21, norm_mode='?avg_dis'), alpha=0.2) + RGBLoss(MSE)`` as in
every CUT3R stage config, for metric data (the ``?`` keeps metric units, no scale
normalisation), plus CUT3R's pose loss:

* L21: per-pixel Euclidean distance between predicted and true points, in each view's
  own camera (``pts_self`` / ``conf_self``) and in the first view's camera
  (``pts_world`` / ``conf``);
* confidence weighting per pixel: ``l * c - alpha * log(c)`` (c >= 1 from the head);
* pose: ``||t - t*|| + ||q - q*||`` of the camera-to-first-camera pose;
* RGB: mean squared error of the colour head against the input image.

Also the scale-free diagnostics the CUT3R test criterion reports (median-scaled depth).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossWeights:
    """Weights and the confidence regulariser of the objective."""

    alpha: float = 0.2
    pose: float = 1.0
    rgb: float = 1.0


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return the mean of ``values`` over ``mask`` (0 when the mask is empty)."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def conf_regression(pred: torch.Tensor, conf: torch.Tensor, target: torch.Tensor,
                    valid: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (confidence-weighted loss, plain mean L21 in metres) over valid pixels.

    ``pred``/``target`` are (..., 3) points, ``conf`` and ``valid`` the matching (...).
    """
    dist = (pred - target).norm(dim=-1)
    weighted = dist * conf - alpha * torch.log(conf)
    return masked_mean(weighted, valid), masked_mean(dist.detach(), valid)


def pose_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (pose loss, mean translation error in metres) for (..., 7) ``[t, q]`` poses."""
    t_err = (pred[..., :3] - target[..., :3]).norm(dim=-1)
    q_err = (pred[..., 3:] - target[..., 3:]).norm(dim=-1)
    return (t_err + q_err).mean(), t_err.detach().mean()


def sequence_loss(outputs: list[dict[str, torch.Tensor]], batch: dict[str, torch.Tensor],
                  weights: LossWeights = LossWeights()) -> tuple[torch.Tensor, dict[str, float]]:
    """Return the objective over every view of a rolled-out batch and its parts.

    Args:
        outputs: one dict per view with ``pts_self``, ``conf_self``, ``pts_world``,
            ``conf``, ``camera_pose`` and optionally ``rgb`` (batch first).
        batch: the :func:`~vlm3r_ros.train.geometry_data.collate` tensors (B, V, ...).
        weights: loss weights.

    Returns:
        ``(loss, metrics)``; metrics are floats: the loss parts and L21/translation
        errors in metres.
    """
    world_terms, self_terms, pose_terms, rgb_terms = [], [], [], []
    world_l21, self_l21, t_errs = [], [], []
    for v, out in enumerate(outputs):
        valid = batch['valid'][:, v]
        lw, dw = conf_regression(out['pts_world'], out['conf'], batch['pts_world'][:, v], valid,
                                 weights.alpha)
        ls, ds = conf_regression(out['pts_self'], out['conf_self'], batch['pts_self'][:, v],
                                 valid, weights.alpha)
        lp, tp = pose_loss(out['camera_pose'], batch['pose'][:, v])
        world_terms.append(lw)
        self_terms.append(ls)
        pose_terms.append(lp)
        world_l21.append(dw)
        self_l21.append(ds)
        t_errs.append(tp)
        if out.get('rgb') is not None:
            target = batch['img'][:, v].permute(0, 2, 3, 1)
            rgb_terms.append((out['rgb'] - target).square().mean())
    conf_part = torch.stack(world_terms).mean() + torch.stack(self_terms).mean()
    pose_part = torch.stack(pose_terms).mean()
    loss = conf_part + weights.pose * pose_part
    metrics = {'conf_loss': float(conf_part.detach()), 'pose_loss': float(pose_part.detach()),
               'l21_world_m': float(torch.stack(world_l21).mean()),
               'l21_self_m': float(torch.stack(self_l21).mean()),
               'trans_err_m': float(torch.stack(t_errs).mean())}
    if rgb_terms:
        rgb_part = torch.stack(rgb_terms).mean()
        loss = loss + weights.rgb * rgb_part
        metrics['rgb_loss'] = float(rgb_part.detach())
    metrics['loss'] = float(loss.detach())
    return loss, metrics


def depth_metrics(pred_depth: torch.Tensor, true_depth: torch.Tensor, valid: torch.Tensor,
                  median_scale: bool = False) -> dict[str, float]:
    """Return AbsRel and delta<1.25 of per-frame depth maps (N, H, W), averaged per frame.

    With ``median_scale`` each frame's prediction is first multiplied by
    ``median(true) / median(pred)`` over its valid pixels (the scale-free variant).
    """
    absrel, delta = [], []
    for p, t, m in zip(pred_depth, true_depth, valid):
        p, t = p[m].double(), t[m].double()
        if t.numel() == 0:
            continue
        p = p.clamp(min=1e-3)
        if median_scale:
            p = p * (t.median() / p.median())
        absrel.append(float(((p - t).abs() / t).mean()))
        delta.append(float((torch.maximum(p / t, t / p) < 1.25).double().mean()))
    n = max(len(absrel), 1)
    return {'abs_rel': sum(absrel) / n, 'delta_1_25': sum(delta) / n, 'frames': len(absrel)}
