"""``vlm3r-probe-vision``: does the frozen tower's output say which objects a scene shows?

    vlm3r-probe-vision --data data/vlm3r

Before instruction tuning can teach the LLM to find "the sofa" among its visual tokens, the
tokens must carry it. This probe measures that directly on the feature caches `vlm3r-train`
builds: one linear score per object category on every patch feature, the maximum over all
patches of the 8 sampled frames is the scene's presence logit (a multiple-instance probe:
an object can be in one patch of one frame). It trains on the training split's cache and
reports, on the validation cache, accuracy and balanced accuracy over the PRESENT/ABSENT
labels of `qa_grounding.presence_row` beside the majority answer. A tower whose probe sits
at the majority baseline gives the LLM nothing to look at.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from vlm3r_ros.train.qa_data import FeatureCache
from vlm3r_ros.train.qa_grounding import ABSENT, PRESENCE_CATEGORIES, PRESENT


def _scene_logits(probe: torch.nn.Linear, vision: torch.Tensor) -> torch.Tensor:
    """Return (S, C) presence logits: the best patch over all sampled frames per category."""
    feats = vision.flatten(1, 2).float()  # (S, N * P, D)
    return probe(feats).amax(dim=1)


def _scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Return accuracy, balanced accuracy and the majority baseline on labelled entries."""
    known = (labels == PRESENT) | (labels == ABSENT)
    truth = labels[known] == PRESENT
    pred = logits[known] > 0
    pos, neg = truth.sum().item(), (~truth).sum().item()
    tpr = (pred & truth).sum().item() / max(1, pos)
    tnr = (~pred & ~truth).sum().item() / max(1, neg)
    return {'accuracy': (pred == truth).float().mean().item(),
            'balanced_accuracy': 0.5 * (tpr + tnr),
            'majority_baseline': max(pos, neg) / max(1, pos + neg),
            'labels': pos + neg}


def presence_probe(train: FeatureCache, held: FeatureCache, epochs: int = 300,
                   lr: float = 1e-2, seed: int = 0) -> dict[str, Any]:
    """Fit the multiple-instance linear probe on ``train``; return its scores on both splits.

    Raises ValueError when a cache has no presence labels (an old cache: rebuild it).
    """
    if train.presence is None or held.presence is None:
        raise ValueError('the feature caches have no presence labels; rebuild them')
    torch.manual_seed(seed)
    probe = torch.nn.Linear(train.vision.shape[-1], len(PRESENCE_CATEGORIES))
    labels = train.presence.long()
    known = (labels == PRESENT) | (labels == ABSENT)
    target = (labels == PRESENT).float()
    # Balance present and absent per category, so the probe cannot win by the prior alone.
    pos = (target * known).sum(0).clamp(min=1)
    neg = ((1 - target) * known).sum(0).clamp(min=1)
    weight = known * torch.where(target > 0, 0.5 / pos, 0.5 / neg)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    vision = train.vision.float()
    for _ in range(epochs):
        logits = _scene_logits(probe, vision)
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, reduction='none') * weight).sum() / len(PRESENCE_CATEGORIES)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return {'train': _scores(_scene_logits(probe, vision), train.presence.long()),
                'held_out': _scores(_scene_logits(probe, held.vision), held.presence.long())}


def main(argv: list[str] | None = None) -> int:
    """Run ``vlm3r-probe-vision`` on a dataset's caches; print (and optionally save) JSON."""
    p = argparse.ArgumentParser(prog='vlm3r-probe-vision', description=__doc__.splitlines()[0])
    p.add_argument('--data', default='data/vlm3r')
    p.add_argument('--profile', default='tiny')
    p.add_argument('--held-split', default='val', help='split scored (default val)')
    p.add_argument('--epochs', type=int, default=300)
    p.add_argument('--out', default='', help='write the scores here as JSON')
    args = p.parse_args(argv)
    root = Path(args.data)
    train = FeatureCache.load(root / f'features-train-{args.profile}.safetensors')
    held = FeatureCache.load(root / f'features-{args.held_split}-{args.profile}.safetensors')
    result = presence_probe(train, held, epochs=args.epochs)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding='utf8')
    return 0


if __name__ == '__main__':
    sys.exit(main())
