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

from dataclasses import dataclass

import cv2
import numpy as np

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
            f'unsupported encoding {encoding!r}; supported: '
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
        raise ImageDecodeError(f'unsupported depth encoding {encoding!r}; use 16UC1 or 32FC1')
    arr = _as_array(encoding, height, width, step, data, is_bigendian)[:, :, 0]
    depth = arr.astype(np.float32) * np.float32(depth_scale if arr.dtype.kind == 'u' else 1.0)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


def decode_compressed(fmt: str, data: bytes) -> np.ndarray:
    """Return a HxWx3 uint8 RGB array for a JPEG/PNG ``CompressedImage``.

    ``fmt`` is the message's format string ('jpeg', 'png', 'rgb8; jpeg compressed bgr8',
    ...); the codec is detected from the data itself, so a wrong format string is not fatal.
    Raises ImageDecodeError for empty, truncated or corrupt data or an oversized image.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageDecodeError(f'compressed image ({fmt or "no format"}) has no data')
    if not (buf[:3].tobytes() == b'\xff\xd8\xff' or buf[:8].tobytes() == b'\x89PNG\r\n\x1a\n'):
        raise ImageDecodeError(
            f'compressed image ({fmt or "no format"}) is neither JPEG nor PNG')
    if buf[:2].tobytes() == b'\xff\xd8' and buf[-2:].tobytes() != b'\xff\xd9':
        # OpenCV decodes truncated JPEGs with grey fill and only a warning: reject them.
        raise ImageDecodeError('JPEG data is truncated (no end-of-image marker)')
    if buf[:8].tobytes() == b'\x89PNG\r\n\x1a\n' and b'IEND' not in buf[-12:].tobytes():
        raise ImageDecodeError('PNG data is truncated (no IEND chunk)')
    header_size = compressed_size(data)
    if header_size is not None:
        # Check the declared size before decoding: a few KB of PNG/JPEG can declare a
        # 16k x 16k image that would cost gigabytes and seconds to decode.
        _check_size(header_size[1], header_size[0])
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(f'compressed image ({fmt or "no format"}) could not be decoded')
    _check_size(*image.shape[:2])
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# JPEG start-of-frame markers (SOF0..SOF15 without DHT, JPG and DAC) carry the image size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def compressed_size(data: bytes) -> tuple[int, int] | None:
    """Return (width, height) declared in a PNG or JPEG header without decoding pixels.

    Returns None when the header cannot be read (the decoder then reports the error).
    """
    if data[:8] == b'\x89PNG\r\n\x1a\n':
        if len(data) < 24 or data[12:16] != b'IHDR':
            return None
        return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')
    if data[:2] != b'\xff\xd8':
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                return None
            return (int.from_bytes(data[i + 7:i + 9], 'big'),
                    int.from_bytes(data[i + 5:i + 7], 'big'))
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], 'big')
    return None


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
    return Intrinsics(float(fx), float(fy), float(cx), float(cy), int(width), int(height))
