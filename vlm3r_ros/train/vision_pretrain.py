"""``vlm3r-pretrain-vision``: dense pretraining of the small SigLIP tower on rendered labels.

    vlm3r-pretrain-vision --data data/vlm3r --out out/pretrain_vision

There are no pretrained towers at the tiny size, and QA answers give a from-scratch tower
almost no gradient (1-2 bits per sample). The renderer gives dense labels for free, so the
tower first learns, per 16x16 patch, the semantic class (floor, ceiling, wall or one of the
object categories: the majority label of the patch) and the log of the median depth. The
frames go through the node's own preprocessing (`vision.preprocess_batch`), so the tower is
trained on exactly what it sees at run time. Writes ``<out>/vision.safetensors`` (the tower's
weights in the local module names, read by ``vlm3r-train --vision``), ``<out>/metrics.jsonl``
and ``<out>/eval.json`` (held-out per-patch accuracy beside the majority-class baseline).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from vlm3r_ros.eval.scenes import CATEGORIES
from vlm3r_ros.models.profiles import Profile, get_profile
from vlm3r_ros.models.vlm3r.vision import build_siglip, preprocess_batch, siglip_features
from vlm3r_ros.train.dataset import (ID_OFFSET, DEPTH_SCALE, decode_depth, decode_ids,
                                     decode_rgb, load_split)

SURFACES: tuple[str, ...] = ('floor', 'ceiling', 'wall')
CLASSES: tuple[str, ...] = SURFACES + tuple(sorted(CATEGORIES))


@dataclass
class PretrainConfig:
    """Everything one vision pretraining run depends on."""

    data: str = 'data/vlm3r'
    out: str = 'out/pretrain_vision'
    profile: str = 'tiny'
    steps: int = 1500
    batch: int = 32
    lr: float = 1e-3
    min_lr: float = 5e-5
    warmup_steps: int = 50
    weight_decay: float = 0.05
    depth_weight: float = 0.5
    # Class-balanced cross-entropy: class c weighs (frequency_c / mean frequency) ** -k
    # over the training patches. Floor, walls and ceiling are half of all patches, so with
    # k = 0 the tower can score 0.9 while hardly telling objects apart.
    class_balance: float = 0.0
    frame_stride: int = 3  # every k-th frame of a sequence (neighbours are near duplicates)
    eval_scenes: int = 16
    seed: int = 0
    threads: int = 1
    max_minutes: float = 0.0  # 0 = no limit
    log_every: int = 50


def class_map(scene_json: str) -> np.ndarray:
    """Return a lookup from stored id (instance id + ID_OFFSET) to class index (-1 = none)."""
    scene = json.loads(scene_json)
    table = np.full(ID_OFFSET + len(scene['objects']), -1, dtype=np.int64)
    table[ID_OFFSET - 1] = 0  # floor (-1)
    table[ID_OFFSET - 2] = 1  # ceiling (-2)
    table[ID_OFFSET - 6:ID_OFFSET - 2] = 2  # four walls (-6..-3)
    for obj in scene['objects']:
        table[ID_OFFSET + int(obj['instance_id'])] = CLASSES.index(obj['category'])
    return table


def patch_labels(ids: np.ndarray, depth: np.ndarray, table: np.ndarray, size: int,
                 patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Return per-patch (class, log median depth) of one frame squashed to size x size.

    The label maps are resized with nearest neighbour like the image's squash resize, so a
    patch's label is the majority class of the pixels it sees. Class -1 and NaN depth mark
    patches without a label (ignored by the loss).
    """
    h, w = ids.shape
    ys = np.minimum((np.arange(size) + 0.5) * h / size, h - 1).astype(int)
    xs = np.minimum((np.arange(size) + 0.5) * w / size, w - 1).astype(int)
    cls = table[np.clip(ids[ys][:, xs].astype(np.int64) + ID_OFFSET, 0, len(table) - 1)]
    d = depth[ys][:, xs]
    g = size // patch
    cls = cls[:g * patch, :g * patch].reshape(g, patch, g, patch).transpose(0, 2, 1, 3)
    cls = cls.reshape(g * g, patch * patch)
    counts = np.stack([(cls == c).sum(1) for c in range(len(CLASSES))], axis=1)
    label = np.where(counts.max(1) > 0, counts.argmax(1), -1)
    d = d[:g * patch, :g * patch].reshape(g, patch, g, patch).transpose(0, 2, 1, 3)
    d = d.reshape(g * g, patch * patch).astype(np.float64)
    d[d <= 0] = np.nan
    with warnings.catch_warnings():  # all-NaN patches (no hit) give NaN, on purpose
        warnings.simplefilter('ignore', RuntimeWarning)
        logd = np.log(np.nanmedian(d, 1))
    return label.astype(np.int64), logd.astype(np.float32)


@dataclass
class PatchData:
    """Frames (uint8, as rendered) with their per-patch labels."""

    images: torch.Tensor  # (N, H, W, 3) uint8
    labels: torch.Tensor  # (N, P) int64, -1 = ignore
    log_depth: torch.Tensor  # (N, P) float32, NaN = ignore


def load_patch_data(root: str | Path, split: str, profile: Profile, stride: int,
                    max_scenes: int | None = None) -> PatchData:
    """Decode every ``stride``-th frame of ``split`` and compute its patch labels."""
    frames = load_split(root, split, 'frames')
    scenes = load_split(root, split, 'scenes')
    tables = {int(s): class_map(j) for s, j in zip(scenes['scene_seed'], scenes['scene'])}
    seeds = sorted(tables)[:max_scenes] if max_scenes else sorted(tables)
    wanted = set(seeds)
    rows = [i for i, (s, f) in enumerate(zip(frames['scene_seed'], frames['frame']))
            if int(s) in wanted and int(f) % stride == 0]
    sub = frames.select(rows)
    images, labels, depths = [], [], []
    for row in sub:
        ids = decode_ids(row['ids'])
        depth = decode_depth(row['depth'])
        lab, logd = patch_labels(ids, depth, tables[int(row['scene_seed'])],
                                 profile.vision_image_size, profile.vision_patch_size)
        images.append(decode_rgb(row['rgb']))
        labels.append(lab)
        depths.append(logd)
    return PatchData(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels)),
                     torch.from_numpy(np.stack(depths)))


class DenseHead(nn.Module):
    """Per-patch linear read-out of the tower: class logits and log depth."""

    def __init__(self, hidden: int) -> None:
        """Build the head for ``hidden``-wide features."""
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.classes = nn.Linear(hidden, len(CLASSES))
        self.depth = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (B, P, classes) logits and (B, P) log depth."""
        h = self.norm(features)
        return self.classes(h), self.depth(h)[..., 0]


def class_weights(labels: torch.Tensor, power: float) -> torch.Tensor | None:
    """Return per-class CE weights ``(freq / mean freq) ** -power`` (None when power is 0).

    Classes without a training patch get weight 0 (they never occur as a target anyway).
    """
    if not power:
        return None
    counts = torch.bincount(labels[labels >= 0], minlength=len(CLASSES)).double()
    seen = counts > 0
    freq = counts / counts[seen].mean()
    weights = torch.zeros(len(CLASSES), dtype=torch.float64)
    weights[seen] = freq[seen].pow(-power)
    return (weights / weights[seen].mean()).float()


def dense_loss(logits: torch.Tensor, log_depth: torch.Tensor, labels: torch.Tensor,
               target_depth: torch.Tensor, depth_weight: float,
               weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Return the loss (CE on labelled patches + weighted L1 on log depth) and its parts."""
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), weight=weights,
                         ignore_index=-1)
    valid = torch.isfinite(target_depth)
    l1 = (log_depth[valid] - target_depth[valid]).abs().mean() if valid.any() \
        else log_depth.sum() * 0
    return ce + depth_weight * l1, {'ce': ce.item(), 'depth_l1': l1.item()}


def pixels_of(images: torch.Tensor, profile: Profile) -> torch.Tensor:
    """Preprocess uint8 frames as the node does."""
    return preprocess_batch(images, profile.vision_image_size, profile.image_mean,
                            profile.image_std, 'cpu', torch.float32)


@torch.no_grad()
def evaluate(tower: nn.Module, head: DenseHead, data: PatchData, profile: Profile,
             batch: int = 64) -> dict[str, float]:
    """Return held-out per-patch accuracy, the majority-class baseline, the mean recall
    over object categories (surfaces excluded: what the LLM must find) and depth AbsRel."""
    tower.eval()
    head.eval()
    correct = total = 0
    hits = torch.zeros(len(CLASSES))
    seen = torch.zeros(len(CLASSES))
    rel: list[torch.Tensor] = []
    for start in range(0, len(data.images), batch):
        imgs = data.images[start:start + batch]
        logits, logd = head(siglip_features(tower, pixels_of(imgs, profile)))
        lab = data.labels[start:start + batch]
        ok = lab >= 0
        right = logits.argmax(-1)[ok] == lab[ok]
        correct += int(right.sum())
        total += int(ok.sum())
        seen += torch.bincount(lab[ok], minlength=len(CLASSES))
        hits += torch.bincount(lab[ok][right], minlength=len(CLASSES))
        td = data.log_depth[start:start + batch]
        v = torch.isfinite(td)
        rel.append((logd[v].exp() - td[v].exp()).abs() / td[v].exp())
    labels = data.labels[data.labels >= 0]
    majority = float(torch.bincount(labels, minlength=len(CLASSES)).max()) / max(1, len(labels))
    tower.train()
    head.train()
    objects = seen[len(SURFACES):] > 0
    recall = (hits[len(SURFACES):][objects] / seen[len(SURFACES):][objects]).mean()
    return {'patch_accuracy': correct / max(1, total), 'majority_baseline': majority,
            'object_recall': float(recall) if objects.any() else math.nan,
            'depth_absrel': float(torch.cat(rel).mean()) if rel else math.nan,
            'patches': total}


def learning_rate(cfg: PretrainConfig, step: int) -> float:
    """Linear warm-up then cosine decay to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run the pretraining; return the final held-out metrics (also in ``eval.json``)."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    profile = get_profile(cfg.profile)
    start = time.monotonic()
    train = load_patch_data(cfg.data, 'train', profile, cfg.frame_stride)
    held = load_patch_data(cfg.data, 'val', profile, cfg.frame_stride, cfg.eval_scenes)
    print(f'{len(train.images)} training frames, {len(held.images)} val frames, '
          f'loaded in {time.monotonic() - start:.0f} s', flush=True)
    torch.manual_seed(cfg.seed)
    tower = build_siglip(profile)
    head = DenseHead(profile.vision_hidden_size)
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = class_weights(train.labels, cfg.class_balance)
    gen = torch.Generator().manual_seed(cfg.seed)
    log = (out / 'metrics.jsonl').open('a', encoding='utf8')
    t0 = time.monotonic()
    step = 0
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group['lr'] = learning_rate(cfg, step)
        idx = torch.randint(len(train.images), (cfg.batch,), generator=gen)
        imgs = train.images[idx]
        labels, target = train.labels[idx], train.log_depth[idx]
        if torch.rand((), generator=gen) < 0.5:  # horizontal flip: labels flip with the image
            g = profile.vision_grid
            imgs = imgs.flip(2)
            labels = labels.view(-1, g, g).flip(2).reshape(len(idx), -1)
            target = target.view(-1, g, g).flip(2).reshape(len(idx), -1)
        logits, logd = head(siglip_features(tower, pixels_of(imgs, profile)))
        loss, parts = dense_loss(logits, logd, labels, target, cfg.depth_weight, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {'step': step, 'loss': float(loss), **parts, 'lr': learning_rate(cfg, step),
                   'minutes': round((time.monotonic() - t0) / 60, 2)}
            log.write(json.dumps(row) + '\n')
            log.flush()
            print(json.dumps(row), flush=True)
        if cfg.max_minutes and (time.monotonic() - t0) / 60 > cfg.max_minutes:
            print(f'stopping at step {step}: --max-minutes {cfg.max_minutes}', flush=True)
            break
    metrics = evaluate(tower, head, held, profile)
    metrics.update({'steps': step + 1, 'minutes': round((time.monotonic() - t0) / 60, 2),
                    'train_frames': len(train.images), 'config': dataclasses.asdict(cfg)})
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()},
              str(out / 'vision.safetensors'), metadata={'profile': cfg.profile})
    (out / 'eval.json').write_text(json.dumps(metrics, indent=1), encoding='utf8')
    print(json.dumps({k: v for k, v in metrics.items() if k != 'config'}), flush=True)
    return metrics


def build_parser() -> argparse.ArgumentParser:
    """Return the parser: one flag per `PretrainConfig` field."""
    p = argparse.ArgumentParser(prog='vlm3r-pretrain-vision', description=__doc__.splitlines()[0])
    for f in dataclasses.fields(PretrainConfig):
        p.add_argument('--' + f.name.replace('_', '-'), type=type(f.default), default=f.default)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``vlm3r-pretrain-vision``; return 0."""
    args = build_parser().parse_args(argv)
    pretrain(PretrainConfig(**vars(args)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
