"""The engine's plain types: model protocols, the model bundle, settings and status.

:mod:`vlm3r_ros.pipeline.engine` re-exports them; they live here so that the engine and
its parts (:mod:`.query_answering`, :mod:`.route_planning`, :mod:`.scene_memory`) and the
model loader share them without importing the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, Protocol, Sequence

import numpy as np

# Keyframe-coverage voxels on predicted (RGB-only) pointmaps. Chosen on the val split
# (benchmarks/keyframe_selection_rgb.py, BENCHMARKS.md): coarse voxels tolerate the small
# CUT3R's depth and pose errors; 0.5 m covered 0.855 of the true-depth keyframes' voxels
# there against 0.820 at 0.1 m.
RGB_KEYFRAME_VOXEL_M = 0.5


class ModelState(IntEnum):
    """Model lifecycle; values equal the SceneStatus MODEL_* constants."""

    NOT_CONFIGURED = 0
    LOADING = 1
    READY = 2
    ERROR = 3
    UNLOADED = 4


class GeometryStream(Protocol):
    """A streaming geometry encoder (CUT3R): state persists across ``step`` calls."""

    def reset(self, mode: str = 'new_sequence') -> None:
        """Reset the stream: 'new_sequence' forgets everything (the next frame takes the
        learnt pose token and becomes the world origin); 'reference' re-initialises only
        the state and memory, as the official ``reset`` mask."""

    def step(self, image: np.ndarray) -> Any:
        """Return a FrameGeometry (pts_world, conf, pose, tokens) for one RGB frame."""


class SpatialModel(Protocol):
    """The fused LMM as the engine uses it."""

    def encode_frame(self, image: np.ndarray, geometry_tokens: Any,
                     world_points: Any) -> Any:
        """Return one frame's visual tokens (fused, projected, pooled)."""

    def answer(self, prompt: str, frame_tokens: Sequence[Any], max_new_tokens: int = 16,
               prefix_key: Any = None,
               on_token: Callable[[str], bool | None] | None = None) -> str:
        """Return the greedy answer text for ``prompt`` over the frames' tokens.

        ``on_token`` (optional) gets the text of each decoded token; returning False
        stops decoding (the text so far is returned).
        """

    def choose(self, prompt: str, frame_tokens: Sequence[Any], n_options: int,
               prefix_key: Any = None) -> tuple[int, list[float]]:
        """Return (index, probabilities) of the most likely option letter."""

    def estimate_number(self, prompt: str, frame_tokens: Sequence[Any], mode: str = 'median',
                        prefix_key: Any = None) -> float:
        """Return the 'median' or 'expected' value of the model's distribution over
        numbers; raises ValueError when it forms none."""


@dataclass
class ModelBundle:
    """What a model loader returns: a factory of geometry streams and the LMM."""

    profile: str
    new_geometry_stream: Callable[[], GeometryStream]
    spatial: SpatialModel
    close: Callable[[], None] = lambda: None
    # Which weights computed the geometry and tokens (vlm3r_ros.models.identity); a saved
    # scene's cached results are reused only under an equal, non-empty identity.
    identity: dict[str, str] = field(default_factory=dict)


#: Where RGB-only poses come from (``EngineConfig.rgb_pose_source`` resolves 'auto' to one).
POSE_SOURCES = ('encoder', 'tracking')


@dataclass
class EngineConfig:
    """Plain settings of the engine (the node fills them from ROS parameters)."""

    max_frames: int = 256
    max_span_s: float = 120.0
    max_bytes: int = 1 << 30
    reset_threshold_s: float = 1.0
    store_max_side: int = 640
    geometry_rate_hz: float = 5.0
    voxel_size_m: float = 0.1
    # Voxels for keyframe coverage; 0 = auto: RGB_KEYFRAME_VOXEL_M on the encoder's
    # pointmaps (points_source 'geometry'), voxel_size_m on depth back-projections.
    keyframe_voxel_size_m: float = 0.0
    min_confidence: float = 0.0
    points_source: str = 'geometry'  # 'geometry' (CUT3R pointmap) or 'depth'
    # Poses when no odometry/TF gives them: 'encoder' (CUT3R's pose head), 'tracking'
    # (image tracks + the encoder's depth: pipeline/rgb_odometry.py) or 'auto' (the
    # profile's: tracking for tiny, whose small CUT3R's pose head does not track motion).
    rgb_pose_source: str = 'auto'
    keyframe_budget: int = 32
    coverage_ratio: float = 0.95
    # 'coverage', 'uniform' (evenly spaced frames with geometry) or 'linspace' (the official
    # evaluators' linspace(0, N - 1, budget) over every buffered frame, repeats included).
    selection: str = 'coverage'
    cache_mode: str = 'streaming'  # 'streaming' or 'per_query'
    max_new_tokens: int = 16
    option_decoding: str = 'constrained'  # 'constrained' (likeliest letter) or 'generate'
    # Numeric answers: 'greedy' text, or the 'median' / 'expected' value of the model's
    # distribution over number strings (a beam over digit tokens; better under MRA).
    numeric_decoding: str = 'greedy'
    answer_parser: str = 'lenient'  # 'lenient' (operator-facing) or 'official' (benchmarks)
    request_queue_size: int = 4
    route_node_spacing_m: float = 0.25
    route_link_radius_m: float = 0.6
    route_turn_threshold_deg: float = 45.0
    route_max_keyframes: int = 16
    route_min_goal_probability: float = 0.0
    pose_tolerance_s: float = 0.1
    up_axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    reconstruction: bool = False  # keep coloured voxels per frame (cloud, free space)


    def pose_source(self, profile: str) -> str:
        """Return 'encoder' or 'tracking' for a model ``profile`` (resolving 'auto')."""
        if self.rgb_pose_source != 'auto':
            return self.rgb_pose_source
        return 'tracking' if profile == 'tiny' else 'encoder'

    def coverage_voxel_m(self) -> float:
        """Return the voxel size of keyframe coverage (resolving 0 = auto)."""
        if self.keyframe_voxel_size_m > 0:
            return self.keyframe_voxel_size_m
        return RGB_KEYFRAME_VOXEL_M if self.points_source == 'geometry' else self.voxel_size_m


@dataclass
class EngineStatus:
    """A consistent snapshot for SceneStatus and diagnostics."""

    model_state: ModelState
    model_profile: str
    model_error: str
    frames_received: int
    frames_dropped: int
    frames_evicted: int
    buffer_length: int
    buffer_span_s: float
    buffer_bytes: int
    buffer_resets: int
    geometry_frames: int
    keyframe_count: int
    keyframe_coverage: float
    voxels_observed: int
    queued_requests: int
    requests_answered: int
    last_error: str
    # Where RGB-only poses come from ('encoder', 'tracking'; '' without a model) and how
    # many frames since the last reset image tracking could not place (kept turning).
    pose_source: str = ''
    tracking_lost: int = 0
