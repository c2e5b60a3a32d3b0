"""The on-disk format of a saved scene (``~/save_scene``, ``~/load_scene``, ``scene_path``).

One safetensors file: plain tensors plus a JSON manifest in the header metadata under
the key ``vlm3r_scene``. Nothing in it is executed (no pickle); a reader needs only
``safetensors`` and a JSON parser. Format version :data:`VERSION`:

Manifest (JSON): ``format`` ('vlm3r_scene'), ``version``, ``created`` (UTC ISO 8601),
``model`` (the identity of the models that computed the geometry and tokens: profile,
fusion, dtype, weight digests; empty without a model), ``settings`` (voxel size and the
trajectory graph's settings), ``frames`` (one entry per frame, oldest first: ``id``,
``stamp_ns``, and which optional tensors it has), ``digest`` (SHA-256 over every tensor's
name, dtype, shape and bytes, in name order, and over the rest of the manifest: a flipped
bit anywhere is found, not loaded).

Tensors (``i`` = the frame's 6-digit position in ``frames``):
  * ``frame/i/image_png``: uint8, the RGB frame as a lossless PNG (exactly the stored image);
  * ``frame/i/depth`` (H, W) float32 m; ``frame/i/intrinsics`` (3, 3) float64;
    ``frame/i/pose`` (4, 4) float64 camera-to-world in the engine's world;
    ``frame/i/voxels`` int64 voxel keys; ``frame/i/tokens`` the cached visual tokens in the
    model's precision (float32, float16, or bfloat16 stored as its int16 bit pattern);
  * ``cloud/i/keys`` int64 and ``cloud/i/rgb`` (N, 3) uint8: the frame's coloured voxels;
  * ``graph/<name>``: :meth:`TrajectoryGraph.export_state` arrays;
  * ``stream/<name>``: the geometry stream's recurrent state
    (:meth:`~vlm3r_ros.models.cut3r.stream.StreamBase.export_state`).

Writing goes to a temporary file in the same directory that replaces the target only
once complete, so a crash never leaves a half-written scene under the name. Reading
checks everything (header, version, digest, every frame's tensors and shapes) before it
returns; any problem raises :class:`SceneFileError` with the reason, and the caller's
live scene is untouched because nothing was applied yet.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 'vlm3r_scene'
VERSION = 1
_OPTIONAL = ('depth', 'intrinsics', 'pose', 'voxels', 'tokens')
_SHAPES = {'intrinsics': (3, 3), 'pose': (4, 4)}


class SceneFileError(ValueError):
    """A scene file that cannot be written or read; the message says why."""


@dataclass
class SavedFrame:
    """One buffered frame as saved: the image and what the pipeline attached to it."""

    frame_id: int
    stamp_ns: int
    image: np.ndarray
    depth: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    pose: np.ndarray | None = None
    voxels: np.ndarray | None = None
    tokens: np.ndarray | None = None  # in tokens_dtype's precision (bfloat16: int16 bits)
    tokens_dtype: str = ''


@dataclass
class Scene:
    """Everything a saved scene holds (see the module docstring for the file layout)."""

    frames: list[SavedFrame]
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    graph: dict[str, np.ndarray] = field(default_factory=dict)
    stream: dict[str, np.ndarray] = field(default_factory=dict)
    cloud: list[tuple[int, int, np.ndarray, np.ndarray]] = field(default_factory=list)
    created: str = ''


def _digest(tensors: dict[str, np.ndarray], manifest: dict[str, Any]) -> str:
    """Return the SHA-256 over the manifest (without its digest) and every tensor."""
    sha = hashlib.sha256()
    body = {k: v for k, v in manifest.items() if k != 'digest'}
    sha.update(json.dumps(body, sort_keys=True).encode())
    for name in sorted(tensors):
        array = tensors[name]
        sha.update(f'{name}|{array.dtype.str}|{array.shape}|'.encode())
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def _encode_png(image: np.ndarray) -> np.ndarray:
    import cv2
    ok, buf = cv2.imencode('.png', cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise SceneFileError(f'could not encode a {image.shape} frame as PNG')
    return buf.reshape(-1)


def _decode_png(data: np.ndarray, where: str) -> np.ndarray:
    import cv2
    if data.ndim != 1 or data.dtype != np.uint8 or data.size < 8:
        raise SceneFileError(f'{where}: image_png must be 1-D uint8 PNG bytes')
    try:
        image = cv2.imdecode(np.ascontiguousarray(data), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise SceneFileError(f'{where}: not a decodable PNG image ({exc})') from exc
    if image is None:
        raise SceneFileError(f'{where}: not a decodable PNG image')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_scene(path: str | os.PathLike[str], scene: Scene) -> int:
    """Write ``scene`` to ``path`` atomically; return the file size in bytes.

    Raises SceneFileError for a frame that is not (H, W, 3) uint8 or a directory that
    cannot be written (the previous file under ``path``, if any, stays as it was).
    """
    from safetensors.numpy import save_file
    tensors: dict[str, np.ndarray] = {}
    entries = []
    for i, frame in enumerate(scene.frames):
        image = np.asarray(frame.image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SceneFileError(f'frame {frame.frame_id}: image must be (H, W, 3) uint8, got '
                                 f'{image.shape} {image.dtype}')
        key = f'frame/{i:06d}'
        tensors[f'{key}/image_png'] = _encode_png(image)
        has = []
        for name in _OPTIONAL:
            value = getattr(frame, name)
            if value is not None:
                tensors[f'{key}/{name}'] = np.ascontiguousarray(value)
                has.append(name)
        entries.append({'id': int(frame.frame_id), 'stamp_ns': int(frame.stamp_ns),
                        'height': int(image.shape[0]), 'width': int(image.shape[1]),
                        'has': has, 'tokens_dtype': frame.tokens_dtype})
    for i, (frame_id, stamp_ns, keys, rgb) in enumerate(scene.cloud):
        tensors[f'cloud/{i:06d}/keys'] = np.asarray(keys, np.int64)
        tensors[f'cloud/{i:06d}/rgb'] = np.asarray(rgb, np.uint8).reshape(-1, 3)
    cloud = [[int(f), int(s)] for f, s, _, _ in scene.cloud]
    for prefix, arrays in (('graph', scene.graph), ('stream', scene.stream)):
        for name, value in arrays.items():
            tensors[f'{prefix}/{name}'] = np.ascontiguousarray(value)
    manifest = {'format': FORMAT, 'version': VERSION,
                'created': scene.created or datetime.now(timezone.utc).isoformat(),
                'model': scene.model, 'settings': scene.settings, 'frames': entries,
                'cloud': cloud}
    manifest['digest'] = _digest(tensors, manifest)
    target = Path(path).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{target.name}.', suffix='.part',
                                   dir=str(target.parent))
        os.close(fd)
    except OSError as exc:
        raise SceneFileError(f'cannot write {str(target)!r}: {exc}') from exc
    try:
        save_file(tensors, tmp, metadata={FORMAT: json.dumps(manifest)})
        os.replace(tmp, target)
    except OSError as exc:
        raise SceneFileError(f'cannot write {str(target)!r}: {exc}') from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target.stat().st_size


def read_scene(path: str | os.PathLike[str]) -> Scene:
    """Read and fully check a scene file; return it.

    Raises SceneFileError naming the problem: missing or unreadable file, not a
    safetensors file or truncated, not a vlm3r scene, a newer format version, a digest
    mismatch (corrupted bytes), or frames whose tensors are missing or malformed.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    source = Path(path).expanduser()
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise SceneFileError(f'cannot read {str(source)!r}: {exc}') from exc
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], 'little')
        header = json.loads(data[8:8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise SceneFileError(f'{str(source)!r} is not a complete safetensors file '
                             f'(truncated or corrupt): {exc}') from exc
    try:
        manifest = json.loads((header.get('__metadata__') or {})[FORMAT])
    except (KeyError, TypeError, ValueError) as exc:
        raise SceneFileError(f'{str(source)!r} is a safetensors file but not a saved '
                             'vlm3r scene (no manifest)') from exc
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
        raise SceneFileError(f'{str(source)!r}: manifest format is not {FORMAT!r}')
    version = manifest.get('version')
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise SceneFileError(f'{str(source)!r}: scene format version {version!r}; this '
                             f'node reads versions 1 to {VERSION}')
    if manifest.get('digest') != _digest(tensors, manifest):
        raise SceneFileError(f'{str(source)!r}: content digest mismatch (the file was '
                             'modified or corrupted after it was written)')
    try:
        return _scene_from(manifest, tensors)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SceneFileError):
            raise
        raise SceneFileError(f'{str(source)!r}: malformed scene: {exc!r}') from exc


# The token dtypes a scene stores, each with its NumPy storage type (bfloat16 as int16 bits).
TOKEN_DTYPES = {'float32': np.float32, 'float16': np.float16, 'bfloat16': np.int16}


def _check_tokens(key: str, value: np.ndarray, dtype: str, earlier: list[SavedFrame]) -> None:
    """Refuse tokens that are not finite 2-D arrays of a known model dtype stored as that
    dtype, or shaped unlike the other frames' (one model: one token count and width)."""
    if dtype not in TOKEN_DTYPES or value.dtype != TOKEN_DTYPES[dtype] or value.ndim != 2:
        raise SceneFileError(f'{key}/tokens: need 2-D tokens of one of {sorted(TOKEN_DTYPES)} '
                             f'(got {value.dtype} {value.shape}, dtype {dtype!r})')
    values = value
    if dtype == 'bfloat16':  # the bits of a bfloat16 are the high half of a float32's
        values = (value.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    if not np.isfinite(values).all():
        raise SceneFileError(f'{key}/tokens: non-finite values')
    shapes = {f.tokens.shape for f in earlier if f.tokens is not None}
    if shapes and value.shape not in shapes:
        raise SceneFileError(f'{key}/tokens: shape {value.shape} differs from {shapes.pop()}')


def _scene_from(manifest: dict[str, Any], tensors: dict[str, np.ndarray]) -> Scene:
    frames = []
    last_stamp = last_id = None
    for i, entry in enumerate(manifest['frames']):
        key = f'frame/{i:06d}'
        stamp, frame_id = int(entry['stamp_ns']), int(entry['id'])
        if last_stamp is not None and (stamp <= last_stamp or frame_id <= last_id):
            raise SceneFileError(f'{key}: stamps and ids must increase')
        last_stamp, last_id = stamp, frame_id
        image = _decode_png(tensors[f'{key}/image_png'], key)
        if image.shape[:2] != (int(entry['height']), int(entry['width'])):
            raise SceneFileError(f'{key}: image is {image.shape[:2]}, manifest says '
                                 f'{(entry["height"], entry["width"])}')
        frame = SavedFrame(frame_id, stamp, image, tokens_dtype=str(entry.get('tokens_dtype',
                                                                                '')))
        for name in entry['has']:
            if name not in _OPTIONAL:
                raise SceneFileError(f'{key}: unknown field {name!r}')
            value = tensors[f'{key}/{name}']
            want = _SHAPES.get(name)
            if want is not None and (value.shape != want or not np.isfinite(value).all()):
                raise SceneFileError(f'{key}/{name}: must be a finite {want} matrix')
            if name == 'depth' and value.shape != image.shape[:2]:
                raise SceneFileError(f'{key}/depth: shape {value.shape} != image '
                                     f'{image.shape[:2]}')
            if name == 'voxels' and (value.ndim != 1 or value.dtype != np.int64):
                raise SceneFileError(f'{key}/voxels: must be 1-D int64 keys')
            if name == 'depth' and value.dtype != np.float32:
                raise SceneFileError(f'{key}/depth: must be float32 metres')
            if name == 'tokens':
                _check_tokens(key, value, frame.tokens_dtype, frames)
            setattr(frame, name, value)
        frames.append(frame)
    cloud = []
    for i, (frame_id, stamp) in enumerate(manifest.get('cloud', [])):
        keys, rgb = tensors[f'cloud/{i:06d}/keys'], tensors[f'cloud/{i:06d}/rgb']
        if keys.ndim != 1 or keys.dtype != np.int64 or rgb.dtype != np.uint8 \
                or rgb.shape != (keys.shape[0], 3):
            raise SceneFileError(f'cloud/{i:06d}: needs int64 keys and (N, 3) uint8 colours')
        cloud.append((int(frame_id), int(stamp), keys, rgb))

    def group(prefix: str) -> dict[str, np.ndarray]:
        return {name[len(prefix) + 1:]: value for name, value in tensors.items()
                if name.startswith(prefix + '/')}

    stream = group('stream')
    if not all(np.isfinite(v).all() for v in stream.values() if v.dtype.kind == 'f'):
        raise SceneFileError('stream state: non-finite values')
    return Scene(frames=frames, model=dict(manifest.get('model') or {}),
                 settings=dict(manifest.get('settings') or {}), graph=group('graph'),
                 stream=stream, cloud=cloud, created=str(manifest.get('created', '')))
