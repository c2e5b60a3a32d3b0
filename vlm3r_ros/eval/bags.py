"""Write synthetic camera sequences as rosbag2 bags (sqlite3 or MCAP), and read them back.

Pure Python through the ``rosbags`` package (no ROS installation needed), with the
ROS 2 Kilted type store (these message definitions are identical in Jazzy). The bags
use rosbag2 metadata **version 9**, the version that Jazzy's and Kilted's rosbag2 write
and read, so ``ros2 bag play <out_dir>/bag`` on Jazzy or Kilted plays them directly
(``--storage`` is picked up from ``metadata.yaml``; MCAP needs the
``rosbag2_storage_mcap`` plugin, installed by default since Iron). Older rosbag2
(Humble) cannot parse version-9 metadata.

Layout of ``out_dir``::

    out_dir/bag/metadata.yaml, out_dir/bag/bag.db3 | bag.mcap   the rosbag2 bag
    out_dir/qa.json                                             scene, camera, QA items

Topics (all stamped with the frame time, header stamp = bag record time):

* ``/camera/image_raw`` sensor_msgs/Image rgb8, or ``/camera/image_raw/compressed``
  sensor_msgs/CompressedImage (JPEG, format 'rgb8; jpeg compressed bgr8' as
  image_transport writes it) when ``compressed``;
* ``/camera/camera_info`` sensor_msgs/CameraInfo (plumb_bob, no distortion);
* ``/camera/depth/image_raw`` sensor_msgs/Image 32FC1 z-depth in metres (optional);
* ``/camera/pose`` geometry_msgs/PoseStamped camera-to-world in ``world_frame``
  (optional; the camera frame is an optical frame: x right, y down, z forward).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import yaml
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from transforms3d.quaternions import mat2quat, quat2mat

from vlm3r_ros.eval.qa import QAItem, Visibility, generate_qa, save_qa
from vlm3r_ros.eval.render import intrinsics, render_full
from vlm3r_ros.eval.scenes import Scene, Trajectory
from vlm3r_ros.ingest.image_codec import (DEPTH_ENCODINGS, decode_color, decode_compressed,
                                          decode_depth, encode_compressed)

TOPIC_IMAGE = '/camera/image_raw'
TOPIC_COMPRESSED = '/camera/image_raw/compressed'
TOPIC_CAMERA_INFO = '/camera/camera_info'
TOPIC_DEPTH = '/camera/depth/image_raw'
TOPIC_POSE = '/camera/pose'
BAG_METADATA_VERSION = 9
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
JPEG_FORMAT = 'rgb8; jpeg compressed bgr8'
_STORAGES = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}


@dataclass(frozen=True)
class BagResult:
    """What :func:`write_bag` wrote: bag directory, QA file, counts per topic."""

    bag_path: Path
    qa_path: Path | None
    storage: str
    metadata_version: int
    message_counts: dict[str, int]
    items: list[QAItem]


@dataclass(frozen=True)
class CameraInfoData:
    """A decoded sensor_msgs/CameraInfo: K and P as matrices, D as a vector."""

    frame_id: str
    width: int
    height: int
    distortion_model: str
    K: np.ndarray
    D: np.ndarray
    P: np.ndarray


def _header(stamp_ns: int, frame_id: str) -> Any:
    """Return a std_msgs/Header for ``stamp_ns``."""
    time = TYPESTORE.types['builtin_interfaces/msg/Time'](
        sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))
    return TYPESTORE.types['std_msgs/msg/Header'](stamp=time, frame_id=frame_id)


def image_message(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    """Return a sensor_msgs/Image for an rgb8 (H, W, 3) uint8 or 32FC1 (H, W) array.

    Raises ValueError for another encoding or a mismatching array.
    """
    if encoding == 'rgb8':
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise ValueError('rgb8 needs an (H, W, 3) uint8 array')
        data = np.ascontiguousarray(array)
        step = array.shape[1] * 3
    elif encoding == '32FC1':
        if array.ndim != 2:
            raise ValueError('32FC1 needs an (H, W) array')
        data = np.ascontiguousarray(array, dtype='<f4')
        step = array.shape[1] * 4
    else:
        raise ValueError(f'unsupported encoding {encoding!r}')
    return TYPESTORE.types['sensor_msgs/msg/Image'](
        header=_header(stamp_ns, frame_id), height=int(array.shape[0]),
        width=int(array.shape[1]), encoding=encoding, is_bigendian=0, step=step,
        data=data.view(np.uint8).reshape(-1))


def compressed_message(rgb: np.ndarray, stamp_ns: int, frame_id: str, quality: int) -> Any:
    """Return a sensor_msgs/CompressedImage holding ``rgb`` as JPEG.

    Raises ValueError when OpenCV cannot encode the image.
    """
    data = encode_compressed(np.ascontiguousarray(rgb), 'jpeg', int(quality))
    return TYPESTORE.types['sensor_msgs/msg/CompressedImage'](
        header=_header(stamp_ns, frame_id), format=JPEG_FORMAT,
        data=np.frombuffer(data, dtype=np.uint8).copy())


def camera_info_message(K: np.ndarray, width: int, height: int, stamp_ns: int,
                        frame_id: str) -> Any:
    """Return a sensor_msgs/CameraInfo for an undistorted pinhole camera ``K``."""
    K = np.asarray(K, dtype=np.float64)
    P = np.zeros((3, 4))
    P[:, :3] = K
    roi = TYPESTORE.types['sensor_msgs/msg/RegionOfInterest'](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return TYPESTORE.types['sensor_msgs/msg/CameraInfo'](
        header=_header(stamp_ns, frame_id), height=int(height), width=int(width),
        distortion_model='plumb_bob', d=np.zeros(5), k=K.reshape(-1).copy(),
        r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)


def pose_message(pose: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """Return a geometry_msgs/PoseStamped for a 4x4 camera-to-world ``pose``.

    The orientation is the unit quaternion of ``pose[:3, :3]`` with w >= 0
    (``transforms3d`` works in (w, x, y, z) order; the message stores x, y, z, w).
    """
    types = TYPESTORE.types
    qw, qx, qy, qz = (float(v) for v in mat2quat(np.asarray(pose[:3, :3], dtype=np.float64)))
    t = pose[:3, 3]
    return types['geometry_msgs/msg/PoseStamped'](
        header=_header(stamp_ns, frame_id),
        pose=types['geometry_msgs/msg/Pose'](
            position=types['geometry_msgs/msg/Point'](x=float(t[0]), y=float(t[1]), z=float(t[2])),
            orientation=types['geometry_msgs/msg/Quaternion'](x=qx, y=qy, z=qz, w=qw)))


def write_bag(scene: Scene, trajectory: Trajectory, out_dir: str | Path, storage: str = 'sqlite3',
              compressed: bool = False, with_depth: bool = False, with_pose: bool = False,
              K: np.ndarray | None = None, width: int = 320, height: int = 240,
              qa_items: Sequence[QAItem] | None = None, make_qa: bool = True, qa_seed: int = 0,
              qa_kwargs: dict[str, Any] | None = None, start_ns: int = DEFAULT_START_NS,
              frame_id: str = 'camera_optical_frame', world_frame: str = 'map',
              jpeg_quality: int = 90) -> BagResult:
    """Render ``trajectory`` through ``scene`` into a rosbag2 bag under ``out_dir``.

    Writes ``out_dir/bag`` (``storage`` 'sqlite3' or 'mcap', metadata version 9) and,
    when there are QA items (given, or generated from the renders when ``make_qa``),
    ``out_dir/qa.json`` with the scene description, the camera, the frame stamps and
    poses. ``K`` defaults to :func:`~vlm3r_ros.eval.render.intrinsics` (70 degrees).
    Returns a :class:`BagResult`. Raises ValueError for an unknown storage and
    FileExistsError when ``out_dir/bag`` already exists.
    """
    if storage not in _STORAGES:
        raise ValueError(f'storage must be one of {sorted(_STORAGES)}, got {storage!r}')
    out = Path(out_dir)
    bag_path = out / 'bag'
    if bag_path.exists():
        raise FileExistsError(f'{bag_path} exists; rosbag2 writers never overwrite')
    out.mkdir(parents=True, exist_ok=True)
    K = intrinsics(width, height) if K is None else np.asarray(K, dtype=np.float64)
    stamps = trajectory.stamps_ns(start_ns)
    counts: dict[str, int] = {}
    pixels = np.zeros((len(trajectory), len(scene.objects)), dtype=np.int32)
    image_topic = TOPIC_COMPRESSED if compressed else TOPIC_IMAGE
    plugin = _STORAGES[storage]
    with Writer(bag_path, version=BAG_METADATA_VERSION, storage_plugin=plugin) as writer:
        conns = {
            image_topic: writer.add_connection(
                image_topic, 'sensor_msgs/msg/CompressedImage' if compressed
                else 'sensor_msgs/msg/Image', typestore=TYPESTORE),
            TOPIC_CAMERA_INFO: writer.add_connection(
                TOPIC_CAMERA_INFO, 'sensor_msgs/msg/CameraInfo', typestore=TYPESTORE),
        }
        if with_depth:
            conns[TOPIC_DEPTH] = writer.add_connection(
                TOPIC_DEPTH, 'sensor_msgs/msg/Image', typestore=TYPESTORE)
        if with_pose:
            conns[TOPIC_POSE] = writer.add_connection(
                TOPIC_POSE, 'geometry_msgs/msg/PoseStamped', typestore=TYPESTORE)

        def put(topic: str, stamp: int, msg: Any) -> None:
            writer.write(conns[topic], stamp, TYPESTORE.serialize_cdr(msg, msg.__msgtype__))
            counts[topic] = counts.get(topic, 0) + 1

        for i, (pose, stamp) in enumerate(zip(trajectory.poses, stamps.tolist())):
            frame = render_full(scene, pose, K, width, height)
            valid = frame.ids[frame.ids >= 0]
            if valid.size:
                pixels[i] = np.bincount(valid, minlength=len(scene.objects))[:len(scene.objects)]
            if compressed:
                put(image_topic, stamp,
                    compressed_message(frame.rgb, stamp, frame_id, jpeg_quality))
            else:
                put(image_topic, stamp, image_message(frame.rgb, 'rgb8', stamp, frame_id))
            put(TOPIC_CAMERA_INFO, stamp, camera_info_message(K, width, height, stamp, frame_id))
            if with_depth:
                put(TOPIC_DEPTH, stamp, image_message(frame.depth, '32FC1', stamp, frame_id))
            if with_pose:
                put(TOPIC_POSE, stamp, pose_message(pose, stamp, world_frame))

    items = list(qa_items) if qa_items is not None else []
    if qa_items is None and make_qa:
        # The renders already give full-resolution visibility; no second pass needed.
        vis = Visibility(pixels=pixels, image_pixels=width * height)
        items = generate_qa(scene, trajectory, K, width, height, seed=qa_seed, visibility=vis,
                            **(qa_kwargs or {}))
    qa_path = None
    if items or make_qa:
        qa_path = save_qa(out / 'qa.json', items, scene, camera={
            'width': width, 'height': height, 'K': K.tolist(), 'frame_id': frame_id,
            'world_frame': world_frame}, bag={
            'path': 'bag', 'storage': storage, 'metadata_version': BAG_METADATA_VERSION,
            'image_topic': image_topic, 'camera_info_topic': TOPIC_CAMERA_INFO,
            'depth_topic': TOPIC_DEPTH if with_depth else None,
            'pose_topic': TOPIC_POSE if with_pose else None,
            'start_ns': int(start_ns), 'rate_hz': trajectory.rate_hz,
            'num_frames': len(trajectory)}, trajectory={
            'stamps_ns': stamps.tolist(),
            'poses': np.round(trajectory.poses, 6).tolist()})
    return BagResult(bag_path=bag_path, qa_path=qa_path, storage=storage,
                     metadata_version=BAG_METADATA_VERSION, message_counts=counts, items=items)


def bag_metadata(path: str | Path) -> dict[str, Any]:
    """Return the ``rosbag2_bagfile_information`` mapping of a bag's metadata.yaml.

    Raises FileNotFoundError when the bag has no metadata.yaml.
    """
    text = (Path(path) / 'metadata.yaml').read_text(encoding='utf8')
    return yaml.safe_load(text)['rosbag2_bagfile_information']


def decode_message(msgtype: str, msg: Any) -> Any:
    """Return the decoded form of one deserialised message (see :func:`read_bag_frames`).

    Images go through :mod:`vlm3r_ros.ingest.image_codec`, the node's own decoders.
    Raises :class:`~vlm3r_ros.ingest.image_codec.ImageDecodeError` (a ValueError) for an
    image it cannot decode.
    """
    if msgtype == 'sensor_msgs/msg/Image':
        fields = (msg.encoding, int(msg.height), int(msg.width), int(msg.step),
                  np.asarray(msg.data, dtype=np.uint8))
        if msg.encoding in DEPTH_ENCODINGS:
            return decode_depth(*fields, is_bigendian=bool(msg.is_bigendian))
        return decode_color(*fields, is_bigendian=bool(msg.is_bigendian))
    if msgtype == 'sensor_msgs/msg/CompressedImage':
        return decode_compressed(msg.format, np.asarray(msg.data, dtype=np.uint8).tobytes())
    if msgtype == 'sensor_msgs/msg/CameraInfo':
        return CameraInfoData(frame_id=msg.header.frame_id, width=int(msg.width),
                              height=int(msg.height), distortion_model=msg.distortion_model,
                              K=np.asarray(msg.k, dtype=np.float64).reshape(3, 3),
                              D=np.asarray(msg.d, dtype=np.float64),
                              P=np.asarray(msg.p, dtype=np.float64).reshape(3, 4))
    if msgtype == 'geometry_msgs/msg/PoseStamped':
        p, q = msg.pose.position, msg.pose.orientation
        out = np.eye(4)
        out[:3, :3] = quat2mat([q.w, q.x, q.y, q.z])
        out[:3, 3] = (p.x, p.y, p.z)
        return out
    return msg


def read_bag_frames(path: str | Path, topics: Iterable[str] | None = None
                    ) -> Iterator[tuple[str, int, Any]]:
    """Yield (topic, stamp_ns, decoded) for every message of a rosbag2 bag in time order.

    Decoded forms (:func:`decode_message`): colour Image and CompressedImage -> (H, W, 3)
    uint8 RGB; depth Image (32FC1 metres, 16UC1 millimetres) -> (H, W) float32 metres
    with NaN where there is no measurement; CameraInfo -> :class:`CameraInfoData`;
    PoseStamped -> 4x4 float64 matrix; anything else -> the deserialised message.
    ``topics`` restricts the output. Reads sqlite3 and MCAP bags alike.
    """
    wanted = None if topics is None else set(topics)
    with Reader(Path(path)) as reader:
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        for conn, stamp, raw in reader.messages(connections=conns):
            msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
            yield conn.topic, int(stamp), decode_message(conn.msgtype, msg)
