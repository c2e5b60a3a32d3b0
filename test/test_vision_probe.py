"""The presence probe and the class-balanced loss of the vision pretraining (no data needed)."""
from __future__ import annotations

import torch

from vlm3r_ros.train.qa_data import FeatureCache
from vlm3r_ros.train.qa_grounding import ABSENT, PRESENCE_CATEGORIES, PRESENT, UNCLEAR
from vlm3r_ros.train.vision_pretrain import CLASSES, class_weights
from vlm3r_ros.train.vision_probe import presence_probe


def _cache(scenes: int, seed: int, signal: float) -> FeatureCache:
    """Random features; a present category lifts its own feature channel in one patch."""
    gen = torch.Generator().manual_seed(seed)
    frames, patches, dim = 4, 16, 24
    presence = torch.where(torch.rand(scenes, len(PRESENCE_CATEGORIES), generator=gen) < 0.3,
                           PRESENT, ABSENT).to(torch.int8)
    presence[:, 0] = UNCLEAR  # ignored by the probe
    vision = torch.randn(scenes, frames, patches, dim, generator=gen)
    for s, c in (presence == PRESENT).nonzero().tolist():
        f = int(torch.randint(frames, (), generator=gen))
        p = int(torch.randint(patches, (), generator=gen))
        vision[s, f, p, c] += signal
    return FeatureCache(list(range(scenes)), vision.half(),
                        torch.zeros(scenes, frames, 2, 4).half(),
                        torch.zeros(scenes, frames, dtype=torch.long), presence)


def test_probe_finds_an_object_seen_in_one_patch_of_one_frame() -> None:
    result = presence_probe(_cache(200, 0, 6.0), _cache(100, 1, 6.0), epochs=300)
    held = result['held_out']
    assert held['balanced_accuracy'] > 0.9
    assert held['labels'] == 100 * (len(PRESENCE_CATEGORIES) - 1)


def test_probe_stays_near_chance_without_a_signal() -> None:
    held = presence_probe(_cache(200, 0, 0.0), _cache(100, 1, 0.0), epochs=300)['held_out']
    assert held['balanced_accuracy'] < 0.62
    assert 0.6 < held['majority_baseline'] < 0.8


def test_class_weights_lift_rare_classes() -> None:
    labels = torch.tensor([0] * 90 + [1] * 9 + [4] * 1 + [-1] * 5)
    assert class_weights(labels, 0.0) is None
    w = class_weights(labels, 0.5)
    assert w.shape == (len(CLASSES),)
    assert w[4] > w[1] > w[0] > 0 and w[2] == 0
    assert abs(float(w[[0, 1, 4]].mean()) - 1.0) < 1e-5
