"""The node's parameters: one table with defaults, descriptions and ranges.

``declare(node)`` declares them all with descriptors (so ``ros2 param describe`` shows
the description and range); ``read(node)`` validates the values into a :class:`NodeConfig`
and raises ValueError naming the bad parameter.

Changes at run time (``ros2 param set``) go through :func:`check_change`: every value is
validated when it is set; the parameters in :data:`LIVE` apply at once (the node hands the
new :class:`NodeConfig` to the engine); the others are read at configure, so while the node
is configured they are refused with a reason saying how to make them take effect.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from vlm3r_ros.pipeline.engine import EngineConfig
from vlm3r_ros.pipeline.engine_types import POSE_SOURCES


@dataclass(frozen=True)
class Spec:
    """One parameter: default, description, and either a numeric range or choices."""

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = False


SPECS: tuple[Spec, ...] = (
    # Input
    Spec('image_topic', '/camera/image_raw', 'Colour image topic (raw sensor_msgs/Image); '
         "with image_transport 'compressed' the node subscribes to <image_topic>/compressed."),
    Spec('image_transport', 'raw', 'raw: sensor_msgs/Image; compressed: CompressedImage '
         '(JPEG/PNG).', choices=('raw', 'compressed')),
    Spec('camera_info_topic', '', 'Optional sensor_msgs/CameraInfo topic (empty: none).'),
    Spec('depth_topic', '', 'Optional depth image topic (16UC1 mm or 32FC1 m; empty: none).'),
    Spec('depth_scale', 0.001, 'Metres per unit of 16UC1 depth.', 1e-6, 10.0),
    Spec('depth_tolerance_s', 0.05, 'Largest stamp difference of a colour frame and the depth '
         'map paired with it (s); a frame waits up to 0.25 s for its depth, in either '
         'arrival order.', 0.0, 1.0),
    Spec('pose_topic', '', 'Optional camera pose topic (odometry) in map_frame, used instead '
         "of the geometry encoder's poses for routes and depth voxels (empty: none)."),
    Spec('pose_topic_type', 'odometry', 'Message type on pose_topic.',
         choices=('odometry', 'pose_stamped')),
    Spec('tf_camera_frame', '', 'Optional camera optical frame looked up in TF (map_frame -> '
         'this frame at each image stamp) for poses; needs tf2_ros (distribution installs).'),
    Spec('qos_reliability', 'best_effort', 'Image subscription reliability; best_effort '
         '(sensor-data QoS) matches most camera drivers and also reliable publishers.',
         choices=('best_effort', 'reliable')),
    Spec('qos_depth', 5, 'Image subscription queue depth.', 1, 100),
    Spec('camera_rate_hz', 0.0, "The camera's frame rate, for the estimate of frames lost "
         'before the node (stamp gaps); 0: estimated from the stamps.', 0.0, 1000.0),
    Spec('max_pose_position_m', 10000.0, 'Poses (pose_topic, TF) farther than this from the '
         'map origin on any axis are rejected (m); geographic coordinates belong in a local '
         'map frame.', 1.0, 1e9),
    # Buffer and keyframes
    Spec('buffer_max_frames', 256, 'Most frames kept in the sliding buffer.', 1, 100000),
    Spec('buffer_max_span_s', 120.0, 'Longest time span kept in the buffer (s).', 0.1, 86400.0),
    Spec('buffer_max_mb', 1024.0, 'Memory cap of the buffer incl. cached tokens (MiB).',
         1.0, 1048576.0),
    Spec('store_max_side', 640, 'Frames are stored downsampled to this longer side (px; '
         '0 keeps full size).', 0, 8192),
    Spec('stamp_reset_threshold_s', 1.0, 'A stamp this far behind the newest (looping bag) '
         'resets the buffer.', 0.0, 3600.0),
    Spec('keyframe_budget', 32, 'Default keyframes per question.', 1, 64),
    Spec('coverage_ratio', 0.95, 'Stop adding keyframes at this voxel coverage.', 0.01, 1.0),
    Spec('voxel_size_m', 0.1, 'Voxel size of the reconstruction (~/cloud, ~/free_space) and, '
         'with points_source depth, of keyframe coverage (m).', 0.01, 2.0),
    Spec('keyframe_voxel_size_m', 0.0, 'Voxel size of keyframe coverage (m); 0: auto, 0.5 on '
         "the encoder's pointmaps (chosen on held-out scenes: coarse voxels tolerate "
         'monocular depth and pose errors), voxel_size_m with points_source depth.', 0.0, 5.0),
    Spec('keyframe_selection', 'coverage', 'coverage: greedy max 3D coverage; uniform: '
         'evenly spaced frames with geometry; linspace: the official evaluators\' sampling, '
         'linspace(0, N-1, budget) cast to int over every buffered frame in the window '
         '(frames repeat when fewer than the budget).',
         choices=('coverage', 'uniform', 'linspace')),
    Spec('points_source', 'geometry', 'World points for voxels and 3D position encoding: '
         'the encoder pointmap, or depth + camera_info + pose_topic.',
         choices=('geometry', 'depth')),
    Spec('rgb_pose_source', 'auto', 'Camera poses when neither pose_topic nor TF gives them: '
         "encoder: CUT3R's pose head and world pointmap; tracking: rotation from image "
         "feature tracks, translation from the tracks and the encoder's depth, own-view "
         'points placed with those poses (camera_info intrinsics when given, else fitted '
         "to the encoder's pointmap); auto: tracking for tiny (its small CUT3R's pose head "
         'does not track motion), encoder for vlm3r-7b.',
         choices=('auto',) + POSE_SOURCES),
    Spec('min_confidence', 0.0, 'Drop pointmap points below this confidence (0: keep all).',
         0.0, 1000.0),
    # Protocol
    Spec('protocol', 'product', 'product: the streaming/coverage defaults (each parameter as '
         'set); reference: the official VSI-Bench/VSTI-Bench evaluation path, fixing '
         'keyframe_selection linspace, keyframe_budget 32, cache_mode per_query (CUT3R run '
         'fresh over exactly those frames), option_decoding generate, max_new_tokens 16, '
         'answer_parser official, numerics reference with dtype auto (float16 on GPU, '
         'float32 on CPU), store_max_side 0, points_source geometry, fusion cross_attention.',
         choices=('product', 'reference'), read_only=True),
    # Model
    Spec('model_profile', 'tiny', 'tiny: embedded CPU profile (the shipped trained small '
         'CUT3R and small fused VLM-3R, see tiny_weights_path); vlm3r-7b: the released '
         'model; none: no model.',
         choices=('tiny', 'vlm3r-7b', 'none'), read_only=True),
    Spec('fusion', 'cross_attention', 'cross_attention: VLM-3R fusion of CUT3R tokens; '
         "position_encoding: Video-3D LLM's 3D position encoding.",
         choices=('cross_attention', 'position_encoding'), read_only=True),
    Spec('geometry_backend', 'torch', 'CUT3R backend.', choices=('torch', 'onnx'),
         read_only=True),
    Spec('onnx_cache_dir', '~/.cache/vlm3r_ros', 'Where the ONNX export of CUT3R is cached '
         '(geometry_backend onnx).', read_only=True),
    Spec('cut3r_weights', '', 'Local CUT3R checkpoint (.pth or .safetensors); empty with '
         'tiny: the shipped small CUT3R.', read_only=True),
    Spec('vlm3r_base_path', '', 'Local LLaVA-NeXT-Video-7B-Qwen2 directory.', read_only=True),
    Spec('vlm3r_non_lora_path', '', 'Local non_lora_trainables.bin (or .safetensors).',
         read_only=True),
    Spec('vlm3r_lora_path', '', 'Local LoRA adapter directory.', read_only=True),
    Spec('tiny_weights_path', '', 'Fused-model base directory for the tiny profile (official '
         'layout; its adapter via vlm3r_lora_path). Empty: the shipped trained small VLM-3R '
         "(vlm3r_ros/weights/vlm3r_small) when present; 'random': the seeded random model.",
         read_only=True),
    Spec('device', 'auto', 'Torch device.', choices=('auto', 'cpu', 'cuda'), read_only=True),
    Spec('dtype', 'auto', 'Model dtype (auto: float32 on CPU; on GPU float16 with the '
         'reference numerics, bfloat16 with the precise ones).',
         choices=('auto', 'float32', 'float16', 'bfloat16'), read_only=True),
    Spec('numerics', 'auto', "reference: as the official code (float16 on GPU when dtype is "
         "auto, TF32 matmuls, q/k rounded to float16 around CUT3R's image-encoder RoPE); "
         'precise: bfloat16 on GPU when dtype is auto, no TF32, RoPE in float32; auto: the '
         "profile's (vlm3r-7b reference, tiny precise).",
         choices=('auto', 'reference', 'precise'), read_only=True),
    Spec('cache_mode', 'streaming', 'streaming: geometry once per frame and cached visual '
         'tokens; per_query: the reference way (fresh CUT3R over the keyframes per question).',
         choices=('streaming', 'per_query')),
    Spec('geometry_rate_hz', 5.0, 'Most geometry frames per second (latest frame wins).',
         0.1, 120.0),
    Spec('max_new_tokens', 16, 'Greedy decoding length of an answer.', 1, 512),
    Spec('option_decoding', 'constrained', "Multiple-choice answers: constrained = the model's "
         'likeliest option letter (always a valid option); generate = free greedy text parsed '
         'the VSI-Bench way (the benchmark protocol).', choices=('constrained', 'generate')),
    Spec('numeric_decoding', 'greedy', 'Numeric answers: greedy = the decoded text (the '
         "benchmark protocol); median / expected = that value of the model's distribution "
         'over number strings (a beam over digit tokens), which scores better under MRA; '
         'greedy is used when the model forms no number that way.',
         choices=('greedy', 'median', 'expected')),
    Spec('answer_parser', 'lenient', "How the answer text becomes value/option_index: lenient "
         "(first whitespace token, one trailing '.' removed; forgiving for operators) or "
         "official (the benchmarks' rule: first piece of a split on ' ', every trailing '.' "
         'removed, then stripped).', choices=('lenient', 'official')),
    # Requests
    Spec('request_queue_size', 4, 'Requests waiting beyond this get BUSY.', 1, 256),
    Spec('request_timeout_s', 60.0, 'A request waiting longer gets TIMEOUT.', 0.1, 3600.0),
    Spec('max_question_chars', 2000, 'Longest accepted question.', 1, 100000),
    Spec('route_max_keyframes', 16, 'Keyframes offered to the model to localise a goal.', 1, 26),
    Spec('route_min_goal_probability', 0.0, "GOAL_NOT_FOUND when the model's probability for "
         'its best keyframe is below this (0: always take the best).', 0.0, 1.0),
    Spec('route_node_spacing_m', 0.25, 'Trajectory graph node spacing (m).', 0.01, 10.0),
    Spec('route_link_radius_m', 0.6, 'Link revisited places closer than this (m; 0: off).',
         0.0, 10.0),
    Spec('route_turn_threshold_deg', 45.0, 'Heading change that makes a turn step (deg).',
         1.0, 179.0),
    Spec('up_axis', 'auto', "World up axis as 'x,y,z', or auto: 0,0,1 with pose_topic, else "
         "0,-1,0 (the first camera's up in CUT3R's world)."),
    # Output and lifecycle
    Spec('map_frame', 'map', 'Frame of the published Path and markers.'),
    Spec('status_period_s', 1.0, 'SceneStatus and diagnostics period (s).', 0.05, 60.0),
    Spec('stale_timeout_s', 3.0, 'No frame for this long makes the stream STALE (s).',
         0.1, 3600.0),
    Spec('autostart', True, 'Configure and activate on start (no lifecycle manager needed).',
         read_only=True),
    Spec('unload_on_deactivate', True, 'Free model memory on deactivate (reload on activate).'),
    # Input hygiene (issue 12)
    Spec('scene_path', '', 'Saved scene file (~/save_scene format): loaded at activate when it '
         'exists (once the model is loaded), the default path of ~/save_scene and ~/load_scene, '
         'and where scene_autosave writes (empty: none).'),
    Spec('scene_autosave', False, 'Save the scene to scene_path at deactivate and shutdown.'),
    Spec('max_input_age_s', 0.0, 'Drop frames whose stamp is older than this by the node '
         'clock (s; 0: keep all); counted in SceneStatus.frames_too_old.', 0.0, 1e9),
    Spec('stamp_skew_warn_s', 5.0, 'Status/diagnostics warn when frame stamps are further '
         'than this from the node clock (s; e.g. a bag without --clock).', 0.001, 1e9),
    # Navigation outputs (issue 12), all in map_frame and stamped with the frames' time
    Spec('publish_odometry', False, "Publish ~/odometry (nav_msgs/Odometry): the camera's pose "
         'per processed frame, covariance from the encoder confidence.'),
    Spec('odometry_child_frame', '', "child_frame_id of ~/odometry (empty: the image "
         "messages' frame_id, 'camera' when they carry none)."),
    Spec('odometry_position_sigma_m', 0.05, 'Position sigma of a frame with confidence 1 '
         '(m); the variance shrinks as 1/confidence.', 1e-6, 100.0),
    Spec('odometry_rotation_sigma_rad', 0.02, 'Rotation sigma of a frame with confidence 1 '
         '(rad); the variance shrinks as 1/confidence.', 1e-6, 10.0),
    Spec('publish_cloud', False, 'Publish ~/cloud (sensor_msgs/PointCloud2 xyz + rgb, '
         'latched): voxel centres of the reconstruction of the buffered frames.'),
    Spec('cloud_period_s', 2.0, 'Shortest period of ~/cloud and ~/free_space (s); they are '
         'only republished when the reconstruction changed.', 0.1, 3600.0),
    Spec('cloud_max_points', 100000, 'Most points in ~/cloud (the voxels seen by the most '
         'frames are kept).', 100, 10000000),
    Spec('publish_free_space', False, 'Publish ~/free_space (nav_msgs/OccupancyGrid, '
         'latched): traversed ground free, reconstructed obstacles occupied.'),
    Spec('free_space_resolution_m', 0.1, 'Cell size of ~/free_space (m).', 0.01, 5.0),
    Spec('free_space_robot_radius_m', 0.3, 'Cells this close to the traversed trajectory '
         'are free (m).', 0.0, 5.0),
    Spec('free_space_obstacle_min_height_m', 0.1, 'Voxels higher than this above the floor '
         'are obstacles; lower ones are floor (m).', 0.0, 5.0),
    Spec('free_space_obstacle_max_height_m', 1.8, 'Voxels higher than this above the floor '
         'are ignored (overhangs, ceiling; m).', 0.01, 20.0),
    Spec('free_space_min_hits', 2, 'Frames that must see a voxel before it is an obstacle.',
         1, 1000),
    Spec('free_space_camera_height_m', 0.0, 'Camera height above the floor (m; 0: take the '
         'floor from the lowest 2% of the reconstruction).', 0.0, 10.0),
    Spec('free_space_max_cells', 1000, 'Most cells per side of ~/free_space (centred on the '
         'trajectory beyond that).', 10, 10000),
)


@dataclass
class NodeConfig:
    """Validated parameter values (attribute names equal parameter names)."""

    image_topic: str
    image_transport: str
    camera_info_topic: str
    depth_topic: str
    depth_scale: float
    depth_tolerance_s: float
    pose_topic: str
    pose_topic_type: str
    tf_camera_frame: str
    qos_reliability: str
    qos_depth: int
    camera_rate_hz: float
    max_pose_position_m: float
    buffer_max_frames: int
    buffer_max_span_s: float
    buffer_max_mb: float
    store_max_side: int
    stamp_reset_threshold_s: float
    keyframe_budget: int
    coverage_ratio: float
    voxel_size_m: float
    keyframe_voxel_size_m: float
    keyframe_selection: str
    points_source: str
    rgb_pose_source: str
    min_confidence: float
    model_profile: str
    fusion: str
    geometry_backend: str
    onnx_cache_dir: str
    cut3r_weights: str
    vlm3r_base_path: str
    vlm3r_non_lora_path: str
    vlm3r_lora_path: str
    tiny_weights_path: str
    device: str
    dtype: str
    numerics: str
    cache_mode: str
    geometry_rate_hz: float
    max_new_tokens: int
    option_decoding: str
    numeric_decoding: str
    answer_parser: str
    protocol: str
    request_queue_size: int
    request_timeout_s: float
    max_question_chars: int
    route_max_keyframes: int
    route_min_goal_probability: float
    route_node_spacing_m: float
    route_link_radius_m: float
    route_turn_threshold_deg: float
    up_axis: str
    map_frame: str
    status_period_s: float
    stale_timeout_s: float
    autostart: bool
    unload_on_deactivate: bool
    scene_path: str
    scene_autosave: bool
    max_input_age_s: float
    stamp_skew_warn_s: float
    publish_odometry: bool
    odometry_child_frame: str
    odometry_position_sigma_m: float
    odometry_rotation_sigma_rad: float
    publish_cloud: bool
    cloud_period_s: float
    cloud_max_points: int
    publish_free_space: bool
    free_space_resolution_m: float
    free_space_robot_radius_m: float
    free_space_obstacle_min_height_m: float
    free_space_obstacle_max_height_m: float
    free_space_min_hits: int
    free_space_camera_height_m: float
    free_space_max_cells: int

    @property
    def subscribed_image_topic(self) -> str:
        """Return the topic actually subscribed for colour frames."""
        if self.image_transport == 'compressed':
            return self.image_topic.rstrip('/') + '/compressed'
        return self.image_topic

    def up_vector(self) -> tuple[float, float, float]:
        """Return the world up axis; raises ValueError for a malformed value."""
        return parse_up_axis(self.up_axis, external=bool(self.pose_topic or self.tf_camera_frame))

    def engine_config(self) -> EngineConfig:
        """Return the engine's settings."""
        return EngineConfig(
            max_frames=self.buffer_max_frames, max_span_s=self.buffer_max_span_s,
            max_bytes=int(self.buffer_max_mb * (1 << 20)),
            reset_threshold_s=self.stamp_reset_threshold_s, store_max_side=self.store_max_side,
            geometry_rate_hz=self.geometry_rate_hz, voxel_size_m=self.voxel_size_m,
            keyframe_voxel_size_m=self.keyframe_voxel_size_m,
            min_confidence=self.min_confidence, points_source=self.points_source,
            rgb_pose_source=self.rgb_pose_source,
            keyframe_budget=self.keyframe_budget, coverage_ratio=self.coverage_ratio,
            selection=self.keyframe_selection, cache_mode=self.cache_mode,
            max_new_tokens=self.max_new_tokens, option_decoding=self.option_decoding,
            numeric_decoding=self.numeric_decoding,
            answer_parser=self.answer_parser,
            request_queue_size=self.request_queue_size,
            route_node_spacing_m=self.route_node_spacing_m,
            route_link_radius_m=self.route_link_radius_m,
            route_turn_threshold_deg=self.route_turn_threshold_deg,
            route_max_keyframes=self.route_max_keyframes,
            route_min_goal_probability=self.route_min_goal_probability, up_axis=self.up_vector(),
            reconstruction=self.publish_cloud or self.publish_free_space)


# Parameters that take effect at once when set on a configured node (read at use time by
# the node or the engine: budgets, decoding, limits, timeouts). Every other writable
# parameter is read at configure.
LIVE: frozenset[str] = frozenset({
    'depth_scale', 'depth_tolerance_s', 'stamp_reset_threshold_s', 'keyframe_budget',
    'coverage_ratio', 'keyframe_selection', 'min_confidence', 'cache_mode', 'geometry_rate_hz',
    'max_new_tokens', 'option_decoding', 'numeric_decoding', 'answer_parser',
    'request_timeout_s',
    'max_question_chars',
    'route_max_keyframes', 'route_min_goal_probability', 'route_turn_threshold_deg',
    'camera_rate_hz', 'max_pose_position_m',
    'stale_timeout_s', 'unload_on_deactivate', 'max_input_age_s', 'stamp_skew_warn_s',
    'scene_path', 'scene_autosave',
})
_BY_NAME = {spec.name: spec for spec in SPECS}
# What protocol 'reference' fixes: the official VSI-Bench evaluation path (32 frames by
# linspace over the whole video, CUT3R run fresh over exactly those frames, free greedy
# generation of 16 tokens parsed the official way, fp16 numerics, frames as decoded).
REFERENCE_PROTOCOL: dict[str, Any] = {
    'keyframe_selection': 'linspace', 'keyframe_budget': 32, 'cache_mode': 'per_query',
    'option_decoding': 'generate', 'numeric_decoding': 'greedy', 'max_new_tokens': 16,
    'answer_parser': 'official',
    'numerics': 'reference', 'dtype': 'auto', 'store_max_side': 0,
    'points_source': 'geometry', 'fusion': 'cross_attention',
}


def check_value(name: str, value: Any) -> None:
    """Raise ValueError naming ``name`` when ``value`` is not allowed for it."""
    spec = _BY_NAME.get(name)
    if spec is None:
        return  # not one of ours (e.g. use_sim_time): rclpy's own rules apply
    if spec.choices and value not in spec.choices:
        raise ValueError(f'parameter {name}={value!r} is not one of {", ".join(spec.choices)}')
    if spec.low is not None and spec.high is not None and not spec.low <= value <= spec.high:
        raise ValueError(f'parameter {name}={value} is outside [{spec.low}, {spec.high}]')
    if name == 'image_topic' and str(value).strip() == '':
        raise ValueError('parameter image_topic must not be empty')
    if name == 'up_axis':
        parse_up_axis(str(value), external=False)


def check_change(changes: dict[str, Any], configured: bool,
                 protocol: str = 'product') -> str | None:
    """Return why setting ``changes`` is refused, or None when they are accepted.

    Every value is validated. On a configured node (inactive or active) only the
    parameters in :data:`LIVE` may change; the others are read at configure. Under
    ``protocol`` 'reference' the parameters it fixes keep their reference values.
    """
    for name, value in changes.items():
        try:
            check_value(name, value)
        except ValueError as exc:
            return str(exc)
        spec = _BY_NAME.get(name)
        if spec is None:
            continue
        if protocol == 'reference' and name in REFERENCE_PROTOCOL \
                and value != REFERENCE_PROTOCOL[name]:
            return (f'parameter {name} is fixed at {REFERENCE_PROTOCOL[name]!r} by protocol '
                    'reference; start the node with protocol:=product to set it')
        if spec.read_only:
            return (f'parameter {name} is read-only: set it when the node starts '
                    f'(--ros-args -p {name}:=... or the params file)')
        if configured and name not in LIVE:
            return (f'parameter {name} is read at configure, so it cannot change while the '
                    f'node is configured: deactivate and clean up the node, set {name}, then '
                    'configure (and activate) again; it takes effect at that configure')
    return None


def apply_live(config: NodeConfig, changes: dict[str, Any]) -> NodeConfig:
    """Return ``config`` with the (already checked) live ``changes`` applied."""
    return replace(config, **{k: v for k, v in changes.items() if k in LIVE})


def parse_up_axis(up_axis: str, external: bool) -> tuple[float, float, float]:
    """Return the up axis of ``up_axis`` ('auto' or 'x,y,z'); ``external``: poses come from
    odometry or TF (auto is then z up). Raises ValueError for a malformed value."""
    if up_axis == 'auto':
        return (0.0, 0.0, 1.0) if external else (0.0, -1.0, 0.0)
    try:
        x, y, z = (float(v) for v in up_axis.split(','))
    except ValueError:
        raise ValueError(f"up_axis must be 'auto' or 'x,y,z', got {up_axis!r}") from None
    if x == y == z == 0:
        raise ValueError('up_axis must not be zero')
    return (x, y, z)


def descriptor(spec: Spec) -> ParameterDescriptor:
    """Return the ParameterDescriptor (description, range, read-only) of a spec."""
    desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        desc.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if spec.low is not None and spec.high is not None:
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                               step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                            to_value=float(spec.high), step=0.0)]
    return desc


def declare(node: Any) -> None:
    """Declare every parameter on ``node`` (skipping ones already declared)."""
    for spec in SPECS:
        if not node.has_parameter(spec.name):
            node.declare_parameter(spec.name, spec.default, descriptor(spec))


def apply_protocol(values: dict[str, Any]) -> dict[str, Any]:
    """Return ``values`` with what ``protocol`` fixes applied ('reference': the values of
    :data:`REFERENCE_PROTOCOL`; 'product': unchanged)."""
    if values.get('protocol') == 'reference':
        return {**values, **REFERENCE_PROTOCOL}
    return dict(values)


def protocol_overrides(values: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Return {name: (value as set, value the protocol uses)} where they differ."""
    if values.get('protocol') != 'reference':
        return {}
    return {k: (values[k], v) for k, v in REFERENCE_PROTOCOL.items() if values.get(k) != v}


def validate(values: dict[str, Any]) -> NodeConfig:
    """Return a NodeConfig from raw values (the protocol's fixed values applied); raise
    ValueError naming a bad parameter."""
    for spec in SPECS:
        check_value(spec.name, values[spec.name])
    values = apply_protocol(values)
    config = NodeConfig(**{f.name: values[f.name] for f in fields(NodeConfig)})
    config.up_vector()
    return config


def read(node: Any) -> NodeConfig:
    """Return the node's validated parameters; raise ValueError naming a bad one."""
    return validate({spec.name: node.get_parameter(spec.name).value for spec in SPECS})
