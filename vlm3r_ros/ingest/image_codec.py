"""ROS image encodings to NumPy and back, without cv_bridge.

The PyPI cv-bridge is a ROS 1 package that fails on NumPy 2, and the wheel-based install
has no ROS 2 cv_bridge, so the conversions the node needs live here. Functions take the
fields of ``sensor_msgs/Image`` / ``CompressedImage`` (not the messages), so this module
has no ROS import and is tested with plain pytest.

Colour frames come out as contiguous HxWx3 uint8 RGB; depth as HxW float32 metres with
NaN where there is no measurement. Every failure raises :class:`ImageDecodeError` with a
message fit for a log line or a diagnostic.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import cv2
import numpy as np

from vlm3r_ros.pipeline.errors import echo

# Frames larger than this are rejected before any allocation (a 16k-wide image is a bug
# or an attack, not a camera frame this node can use).
MAX_SIDE = 8192
MAX_PIXELS = 4096 * 4096

COLOR_ENCODINGS = (
    'rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16',
    'yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv',
)
DEPTH_ENCODINGS = ('16UC1', '32FC1')

# encoding -> (channels, dtype)
_LAYOUT: dict[str, tuple[int, np.dtype]] = {
    'rgb8': (3, np.dtype(np.uint8)),
    'bgr8': (3, np.dtype(np.uint8)),
    'rgba8': (4, np.dtype(np.uint8)),
    'bgra8': (4, np.dtype(np.uint8)),
    'mono8': (1, np.dtype(np.uint8)),
    'mono16': (1, np.dtype(np.uint16)),
    'yuv422': (2, np.dtype(np.uint8)),
    'uyvy': (2, np.dtype(np.uint8)),
    'yuv422_yuy2': (2, np.dtype(np.uint8)),
    'yuyv': (2, np.dtype(np.uint8)),
    '16UC1': (1, np.dtype(np.uint16)),
    '32FC1': (1, np.dtype(np.float32)),
}
_YUV_CODES = {
    'yuv422': cv2.COLOR_YUV2RGB_UYVY,  # ROS 'yuv422' is UYVY byte order
    'uyvy': cv2.COLOR_YUV2RGB_UYVY,
    'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUY2,
    'yuyv': cv2.COLOR_YUV2RGB_YUY2,
}


class ImageDecodeError(ValueError):
    """Raised when image fields cannot be turned into an array; the message says why."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics for an image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def matrix(self) -> np.ndarray:
        """Return the 3x3 camera matrix K as float64."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> 'Intrinsics':
        """Return the intrinsics of the same camera resized to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)


def _check_size(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f'image has zero size ({width}x{height})')
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise ImageDecodeError(
            f'image {width}x{height} exceeds the limit ({MAX_SIDE} px a side, '
            f'{MAX_PIXELS} px in all)')


def _as_array(encoding: str, height: int, width: int, step: int, data: bytes | bytearray
              | memoryview | np.ndarray, is_bigendian: bool) -> np.ndarray:
    """Return a HxWxC view of ``data`` for a known raw encoding (no copy when possible)."""
    if encoding not in _LAYOUT:
        raise ImageDecodeError(
            f'unsupported encoding {echo(encoding)}; supported: '
            f'{", ".join(COLOR_ENCODINGS + DEPTH_ENCODINGS)}')
    _check_size(height, width)
    channels, dtype = _LAYOUT[encoding]
    row_bytes = width * channels * dtype.itemsize
    if channels == 2 and width % 2:
        raise ImageDecodeError(f'{encoding} needs an even width, got {width}')
    if step < row_bytes:
        raise ImageDecodeError(f'step {step} is smaller than a row of {row_bytes} bytes '
                               f'({width} px x {channels} ch x {dtype.itemsize} B)')
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else \
        data.reshape(-1).view(np.uint8)
    if buf.size != step * height:
        raise ImageDecodeError(
            f'data has {buf.size} bytes but step x height = {step} x {height} = {step * height}')
    rows = buf.reshape(height, step)[:, :row_bytes]
    if dtype.itemsize > 1:
        order = '>' if is_bigendian else '<'
        rows = np.ascontiguousarray(rows).view(dtype.newbyteorder(order))
    return rows.reshape(height, width, channels)


def decode_color(encoding: str, height: int, width: int, step: int, data: bytes, *,
                 is_bigendian: bool = False) -> np.ndarray:
    """Return a contiguous HxWx3 uint8 RGB array for a raw colour image.

    Grey images are replicated to three channels; mono16 keeps its high byte.
    Raises ImageDecodeError for unknown encodings, depth encodings, bad sizes or a
    step/data length that does not match.
    """
    if encoding in DEPTH_ENCODINGS:
        raise ImageDecodeError(f'{encoding} is a depth encoding; send it on the depth topic')
    arr = _as_array(encoding, height, width, step, data, is_bigendian)
    if encoding == 'rgb8':
        return np.ascontiguousarray(arr)
    if encoding == 'bgr8':
        return np.ascontiguousarray(arr[:, :, ::-1])
    if encoding == 'rgba8':
        return np.ascontiguousarray(arr[:, :, :3])
    if encoding == 'bgra8':
        return np.ascontiguousarray(arr[:, :, 2::-1])
    if encoding == 'mono8':
        return np.repeat(arr, 3, axis=2)
    if encoding == 'mono16':
        return np.repeat((arr >> 8).astype(np.uint8), 3, axis=2)
    return cv2.cvtColor(np.ascontiguousarray(arr), _YUV_CODES[encoding])


def decode_depth(encoding: str, height: int, width: int, step: int, data: bytes, *,
                 is_bigendian: bool = False, depth_scale: float = 0.001) -> np.ndarray:
    """Return HxW float32 depth in metres; NaN where there is no valid measurement.

    16UC1 (and mono16) are integer units scaled by ``depth_scale`` (millimetres by the
    REP 118 convention); 32FC1 is already metres. Zero, negative and non-finite values
    become NaN. Raises ImageDecodeError for other encodings or malformed data.
    """
    if encoding not in DEPTH_ENCODINGS + ('mono16',):
        raise ImageDecodeError(f'unsupported depth encoding {echo(encoding)}; use 16UC1 or '
                               '32FC1')
    arr = _as_array(encoding, height, width, step, data, is_bigendian)[:, :, 0]
    depth = arr.astype(np.float32) * np.float32(depth_scale if arr.dtype.kind == 'u' else 1.0)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


def decode_compressed(fmt: str, data: bytes) -> np.ndarray:
    """Return a HxWx3 uint8 RGB array for a JPEG/PNG ``CompressedImage``.

    ``fmt`` is the message's format string ('jpeg', 'png', 'rgb8; jpeg compressed bgr8',
    ...); the codec is detected from the data itself, so a wrong format string is not fatal.
    The pixel count is bounded before any pixel is decoded (see :func:`declared_sizes`),
    and OpenCV's own decoder limits (set in ``vlm3r_ros/__init__.py``) bound it again.
    Raises ImageDecodeError for empty, truncated or corrupt data or an oversized image.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageDecodeError(f'compressed image ({_format_name(fmt)}) has no data')
    raw = buf.tobytes() if not isinstance(data, bytes) else data
    if not (raw[:3] == b'\xff\xd8\xff' or raw[:8] == _PNG_MAGIC):
        raise ImageDecodeError(
            f'compressed image ({_format_name(fmt)}) is neither JPEG nor PNG')
    if raw[:2] == b'\xff\xd8' and raw[-2:] != b'\xff\xd9':
        # OpenCV decodes truncated JPEGs with grey fill and only a warning: reject them.
        raise ImageDecodeError('JPEG data is truncated (no end-of-image marker)')
    if raw[:8] == _PNG_MAGIC and b'IEND' not in raw[-12:]:
        raise ImageDecodeError('PNG data is truncated (no IEND chunk)')
    # Check every declared size before decoding: a few KB of PNG/JPEG can declare a
    # 20k x 20k image that would cost gigabytes and seconds to decode.
    for width, height in declared_sizes(raw):
        _check_size(height, width)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV's size limits raise instead of returning None
        raise ImageDecodeError(f'compressed image ({_format_name(fmt)}) was refused by the '
                               f'decoder: {str(exc).strip().splitlines()[-1]}') from None
    if image is None:
        raise ImageDecodeError(f'compressed image ({_format_name(fmt)}) could not be decoded')
    _check_size(*image.shape[:2])
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _format_name(fmt: str) -> str:
    """Return a CompressedImage format string fit for an error message (clipped)."""
    return echo(fmt, 40) if fmt else 'no format'

# JPEG start-of-frame markers (SOF0..SOF15 without DHT, JPG and DAC) carry the image size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_SOF_RE = re.compile(b'\xff[' + bytes(sorted(_JPEG_SOF)) + b']')
# A PNG IHDR chunk: 4-byte length 13, then the type; width and height follow.
_PNG_IHDR_RE = re.compile(re.escape(b'\x00\x00\x00\x0dIHDR'))


def declared_sizes(data: bytes) -> list[tuple[int, int]]:
    """Return every (width, height) that a JPEG or PNG declares, without decoding pixels.

    JPEG: every SOFn segment anywhere in the data, not only where a strict walk of the
    markers would look. libjpeg skips stray bytes before a marker (with a warning) and
    reads whichever SOFn it meets, so a walk that stops at the first oddity can be
    bypassed; a SOFn that libjpeg accepts always has length 8 + 3 x components, which is
    what the scan looks for. PNG: every IHDR chunk (the decoder uses the first chunk,
    which must be IHDR). Raises ImageDecodeError when no frame header is found at all.
    """
    sizes: list[tuple[int, int]] = []
    if data[:8] == _PNG_MAGIC:
        if data[12:16] != b'IHDR':
            raise ImageDecodeError('PNG data does not start with an IHDR chunk')
        for match in _PNG_IHDR_RE.finditer(data):
            i = match.end()
            if i + 8 <= len(data):
                sizes.append((int.from_bytes(data[i:i + 4], 'big'),
                              int.from_bytes(data[i + 4:i + 8], 'big')))
        return sizes
    if data[:2] != b'\xff\xd8':
        return sizes
    for match in _JPEG_SOF_RE.finditer(data):
        i = match.start()
        if i + 10 > len(data):
            continue
        length = int.from_bytes(data[i + 2:i + 4], 'big')
        components = data[i + 9]
        if components and length == 8 + 3 * components:
            sizes.append((int.from_bytes(data[i + 7:i + 9], 'big'),
                          int.from_bytes(data[i + 5:i + 7], 'big')))
    if not sizes:
        raise ImageDecodeError('JPEG data has no frame header (SOF marker)')
    return sizes


def compressed_size(data: bytes) -> tuple[int, int] | None:
    """Return the (width, height) a PNG or JPEG declares first, without decoding pixels.

    Returns None when no header can be read. :func:`declared_sizes` lists every one.
    """
    try:
        sizes = declared_sizes(data)
    except ImageDecodeError:
        return None
    return sizes[0] if sizes else None


def encode_compressed(rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 90) -> bytes:
    """Return JPEG or PNG bytes for a HxWx3 uint8 RGB array (for publishers and tests)."""
    ext = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}.get(fmt)
    if ext is None:
        raise ValueError(f'format must be jpeg or png, got {fmt!r}')
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == '.jpg' else []
    ok, out = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError('encoding failed')
    return out.tobytes()


def intrinsics_from_k(k: list[float] | np.ndarray, width: int, height: int) -> Intrinsics:
    """Return Intrinsics from a row-major 3x3 ``K`` (``sensor_msgs/CameraInfo.k``).

    Raises ImageDecodeError when the size is zero or fx, fy, cx, cy are not finite
    positive numbers (an unset CameraInfo has an all-zero K).
    """
    kk = np.asarray(k, dtype=np.float64).reshape(-1)
    if kk.size != 9:
        raise ImageDecodeError(f'camera matrix K needs 9 values, got {kk.size}')
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f'camera_info has zero size ({width}x{height})')
    fx, cx, fy, cy = kk[0], kk[2], kk[4], kk[5]
    if not np.all(np.isfinite([fx, fy, cx, cy])) or fx <= 0 or fy <= 0:
        raise ImageDecodeError(f'camera_info intrinsics are invalid (fx={fx}, fy={fy}, '
                               f'cx={cx}, cy={cy}); is the camera calibrated?')
    _check_plausible(float(fx), float(fy), float(cx), float(cy), int(width), int(height))
    return Intrinsics(float(fx), float(fy), float(cx), float(cy), int(width), int(height))


# A pinhole camera_info is refused when it implies a field of view outside these (deg) on
# either axis, pixels more than this far from square, or a principal point farther than
# this fraction of the size outside the image: such a K (fx = 1e-30, a K for another
# camera) would put every back-projected depth point somewhere absurd.
MIN_FOV_DEG, MAX_FOV_DEG = 0.5, 175.0
MAX_PIXEL_ASPECT = 4.0
PRINCIPAL_POINT_MARGIN = 0.25


def _check_plausible(fx: float, fy: float, cx: float, cy: float, width: int,
                     height: int) -> None:
    """Raise ImageDecodeError for intrinsics no real pinhole camera of that size has."""
    for axis, f, size in (('x', fx, width), ('y', fy, height)):
        fov = math.degrees(2.0 * math.atan(size / (2.0 * f)))
        if not MIN_FOV_DEG <= fov <= MAX_FOV_DEG:
            raise ImageDecodeError(
                f'camera_info f{axis}={f:.4g} px gives a {fov:.3g} deg field of view over '
                f'{size} px (plausible: {MIN_FOV_DEG:g}..{MAX_FOV_DEG:g} deg); is it the '
                'calibration of this camera?')
    if not 1.0 / MAX_PIXEL_ASPECT <= fx / fy <= MAX_PIXEL_ASPECT:
        raise ImageDecodeError(f'camera_info fx={fx:.4g} and fy={fy:.4g} differ by more than '
                               f'{MAX_PIXEL_ASPECT:g}x (pixels are nearly square)')
    m = PRINCIPAL_POINT_MARGIN
    if not (-m * width <= cx <= (1 + m) * width and -m * height <= cy <= (1 + m) * height):
        raise ImageDecodeError(f'camera_info principal point ({cx:.4g}, {cy:.4g}) is far '
                               f'outside the {width}x{height} image')
