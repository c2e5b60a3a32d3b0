"""Spatial-QA training data: debiased items and per-scene frame features for `vlm3r-train`.

For every scene of a `vlm3r-dataset` split the model sees the N frames the QA items were
generated for (`sample_frame_indices`, N = the manifest's ``qa_frames``). Both frozen towers
run once and are cached:
- CUT3R streams *every* frame of the sequence in order, as the node does with a camera, and
  the geometry tokens of the N sampled frames are kept;
- the (pretrained, frozen) SigLIP tower's features of the N frames.
The cache is a safetensors file per split (no pickle): ``vision`` (S, N, P, Dv) and
``geometry`` (S, N, 1 + G, Dg) in float16, ``seeds`` (S,), and ``presence`` (S, C): which
object categories the sampled frames show (`qa_grounding.presence_row`, the labels of the
grounding aid). Items are QAItem JSON.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vlm3r_ros.eval.qa import QAItem, sample_frame_indices
from vlm3r_ros.models.cut3r.checkpoint import load_cut3r
from vlm3r_ros.models.cut3r.stream import Cut3rStream
from vlm3r_ros.models.profiles import Profile
from vlm3r_ros.models.vlm3r.vision import build_siglip, preprocess_batch, siglip_features
from vlm3r_ros.train.dataset import decode_ids, decode_rgb, iter_scene_frames, load_split
from vlm3r_ros.train.qa_grounding import PRESENCE_CATEGORIES, presence_row


def manifest(root: str | Path) -> dict:
    """Return the dataset's manifest.json (raises FileNotFoundError without one)."""
    return json.loads((Path(root) / 'manifest.json').read_text(encoding='utf8'))


def load_items(root: str | Path, split: str) -> dict[int, list[QAItem]]:
    """Return {scene seed: its QA items} of a split."""
    scenes = load_split(root, split, 'scenes')
    return {int(s): [QAItem.from_dict(d) for d in json.loads(q)]
            for s, q in zip(scenes['scene_seed'], scenes['qa'])}


@dataclass
class FeatureCache:
    """Frozen-tower features of the sampled frames of every scene of a split."""

    seeds: list[int]
    vision: torch.Tensor  # (S, N, P, Dv) float16
    geometry: torch.Tensor  # (S, N, 1 + G, Dg) float16
    frame_indices: torch.Tensor  # (S, N) trajectory index of each sampled frame
    presence: torch.Tensor | None = None  # (S, C) int8 per PRESENCE_CATEGORIES; None: old cache

    def index(self) -> dict[int, int]:
        """Return {seed: row}."""
        return {s: i for i, s in enumerate(self.seeds)}

    def save(self, path: str | Path, meta: dict[str, str]) -> None:
        """Write the cache as safetensors with ``meta`` (strings) in the header."""
        tensors = {'vision': self.vision.contiguous(), 'geometry': self.geometry.contiguous(),
                   'frame_indices': self.frame_indices.contiguous(),
                   'seeds': torch.tensor(self.seeds, dtype=torch.int64)}
        if self.presence is not None:
            tensors['presence'] = self.presence.contiguous()
        save_file(tensors, str(path),
                  metadata={**meta, 'presence_categories': ','.join(PRESENCE_CATEGORIES)})

    @classmethod
    def load(cls, path: str | Path) -> 'FeatureCache':
        """Read a cache written by `save`."""
        t = load_file(str(path))
        return cls([int(s) for s in t['seeds']], t['vision'], t['geometry'],
                   t['frame_indices'], t.get('presence'))

    @staticmethod
    def metadata(path: str | Path) -> dict[str, str]:
        """Return the header strings `save` wrote (which towers made the cache)."""
        with safe_open(str(path), framework='pt') as f:
            return dict(f.metadata() or {})


def tower_digest(state: dict[str, torch.Tensor]) -> str:
    """Return the first 16 hex digits of a SHA-256 over a tower's tensors (names and values),
    the key that tells whether cached features came from this tower."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().to('cpu', torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cache_for_tower(path: str | Path, root: str | Path, split: str, profile: Profile,
                    vision_state: dict[str, torch.Tensor]) -> FeatureCache:
    """Load the cache at ``path``, recomputing its vision features (and rewriting the file)
    when another tower made them. Raises FileNotFoundError when there is no cache."""
    cache = FeatureCache.load(path)
    meta = FeatureCache.metadata(path)
    digest = tower_digest(vision_state)
    if meta.get('vision_sha256') != digest:
        print(f'{Path(path).name}: vision features from another tower, recomputing them',
              flush=True)
        cache = refresh_vision(cache, root, split, profile, vision_state)
        cache.save(path, {**meta, 'vision_sha256': digest})
    return cache


@torch.no_grad()
def refresh_vision(cache: FeatureCache, root: str | Path, split: str, profile: Profile,
                   vision_state: dict[str, torch.Tensor]) -> FeatureCache:
    """Return ``cache`` with the vision features recomputed by another tower.

    CUT3R tokens, frame choice and presence labels do not depend on the vision tower, so a
    new tower only re-runs SigLIP on the cached frames (seconds per hundred scenes, against
    minutes for the CUT3R streams). Raises KeyError when a cached scene is not in ``split``.
    """
    tower = build_siglip(profile)
    tower.load_state_dict(vision_state)
    tower.eval()
    frames = load_split(root, split, 'frames')
    rows_of = dict(iter_scene_frames(frames))
    vision = []
    for seed, picked in zip(cache.seeds, cache.frame_indices.tolist()):
        rows = rows_of[seed]
        images = np.stack([decode_rgb(frames[int(rows[i])]['rgb']) for i in picked])
        pixels = preprocess_batch(torch.from_numpy(images), profile.vision_image_size,
                                  profile.image_mean, profile.image_std, 'cpu', torch.float32)
        vision.append(siglip_features(tower, pixels).half())
    return FeatureCache(list(cache.seeds), torch.stack(vision), cache.geometry,
                        cache.frame_indices, cache.presence)


@torch.no_grad()
def build_feature_cache(root: str | Path, split: str, profile: Profile,
                        vision_state: dict[str, torch.Tensor], cut3r_path: str | Path,
                        num_frames: int, max_scenes: int | None = None,
                        progress: bool = True, part: tuple[int, int] = (0, 1)
                        ) -> FeatureCache:
    """Run CUT3R over every frame and SigLIP over the sampled frames of each scene.

    ``part`` (k, K) keeps the scenes whose position n satisfies n % K == k, so K processes
    can share a split (`build_feature_cache_parallel`).
    """
    tower = build_siglip(profile)
    tower.load_state_dict(vision_state)
    tower.eval()
    cut3r = load_cut3r(str(cut3r_path), device='cpu', dtype=torch.float32)
    size = (profile.geometry_image_size, profile.geometry_image_size)
    frames = load_split(root, split, 'frames')
    scenes = load_split(root, split, 'scenes')
    scene_json = dict(zip((int(s) for s in scenes['scene_seed']), scenes['scene']))
    seeds, vision, geometry, indices, presence = [], [], [], [], []
    start = time.monotonic()
    for n, (seed, rows) in enumerate(iter_scene_frames(frames)):
        if max_scenes is not None and n >= max_scenes:
            break
        if n % part[1] != part[0]:
            continue
        images = [decode_rgb(frames[int(r)]['rgb']) for r in rows]
        picked = sample_frame_indices(len(images), num_frames)
        stream = Cut3rStream(cut3r, image_size=size, resize_mode=profile.geometry_resize_mode)
        tokens = {}
        wanted = set(picked.tolist())
        for i, img in enumerate(images[:int(picked[-1]) + 1]):
            out = stream.step(img)
            if i in wanted:
                tokens[i] = out.tokens.float()
        pixels = preprocess_batch(torch.from_numpy(np.stack([images[i] for i in picked])),
                                  profile.vision_image_size, profile.image_mean,
                                  profile.image_std, 'cpu', torch.float32)
        vision.append(siglip_features(tower, pixels).half())
        geometry.append(torch.stack([tokens[int(i)] for i in picked]).half())
        indices.append(torch.from_numpy(picked.astype(np.int64)))
        ids = [decode_ids(frames[int(rows[int(i)])]['ids']) for i in picked]
        presence.append(torch.from_numpy(presence_row(ids, scene_json[seed])))
        seeds.append(seed)
        if progress and n % 20 == 0:
            print(f'[cache {split}] scene {n} ({time.monotonic() - start:.0f} s)', flush=True)
    return FeatureCache(seeds, torch.stack(vision), torch.stack(geometry), torch.stack(indices),
                        torch.stack(presence))


def _build_part(args: tuple) -> FeatureCache:
    torch.set_num_threads(1)  # one process per core: more threads only oversubscribe
    *rest, part = args
    return build_feature_cache(*rest, part=part)


def build_feature_cache_parallel(root: str | Path, split: str, profile: Profile,
                                 vision_state: dict[str, torch.Tensor],
                                 cut3r_path: str | Path, num_frames: int,
                                 max_scenes: int | None = None, workers: int = 1
                                 ) -> FeatureCache:
    """`build_feature_cache` in ``workers`` processes; returns the cache in seed order."""
    if workers <= 1:
        return build_feature_cache(root, split, profile, vision_state, cut3r_path, num_frames,
                                   max_scenes)
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    jobs = [(root, split, profile, vision_state, str(cut3r_path), num_frames, max_scenes,
             k == 0, (k, workers)) for k in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=get_context('spawn')) as pool:
        parts = list(pool.map(_build_part, jobs))
    seeds = [s for p in parts for s in p.seeds]
    order = torch.tensor(np.argsort(seeds, kind='stable'))

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(p, name) for p in parts])[order]

    return FeatureCache(sorted(seeds), cat('vision'), cat('geometry'), cat('frame_indices'),
                        cat('presence'))


def flatten(items: dict[int, list[QAItem]], seeds: Sequence[int]) -> list[QAItem]:
    """Return the items of ``seeds`` as one list (scene order kept)."""
    return [i for s in seeds for i in items.get(s, [])]


def scene_of(item: QAItem) -> int:
    """Return the scene seed an item belongs to (from its id 's<seed>-<task>-<n>')."""
    return int(item.id[1:].split('-', 1)[0])
