"""Image preprocessing for CUT3R: resize/crop, normalisation, intrinsics and ray maps.

Three resize modes:

* ``'crop'`` follows the official ``load_images``: for ``size == 224`` the short side
  is resized to 224 and the centre 224x224 square is kept; otherwise the long side is
  resized to ``size`` and the centre is cropped to multiples of 16 (a square image is
  cropped to 4:3, as the official loader does without ``square_ok``). PIL LANCZOS is
  used when shrinking, BICUBIC when enlarging. The output shape depends on the
  input aspect ratio (640x480 -> 512x384 at size 512).
* ``'stretch'`` resizes the raw frame to exactly ``(h, w)`` with bilinear interpolation
  and no crop. It is what the tiny profile's small CUT3R was trained on; it is *not*
  VLM-3R's input (up to 49 grey levels off at edges at 432x432).
* ``'vlm3r'`` reproduces the frame VLM-3R gives CUT3R: the SigLIP-processed image
  (squash-resize to ``VLM3R_VISION_SIZE`` = 384 with PIL bicubic, which rounds to 8 bits,
  then mean = std = 0.5 normalisation), resized bilinearly (half-pixel centres, no
  antialiasing, like ``F.interpolate``) to ``(h, w)`` (432x432 -> 27x27 patches). The
  reference runs that last resize in the model dtype (float16); here it is float32.

All normalise RGB to [-1, 1] (``ImgNorm``: mean 0.5, std 0.5). Preprocessing is
NumPy/PIL only, so the ONNX Runtime path never wakes PyTorch's thread pool (whose
spinning threads would compete with ONNX Runtime's on small machines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from PIL import Image

SizeSpec = Union[int, tuple[int, int]]
RESIZE_MODES = ('crop', 'stretch', 'vlm3r')
#: Side of the SigLIP-processed frame that VLM-3R resizes to the CUT3R input.
VLM3R_VISION_SIZE = 384


@dataclass(frozen=True)
class ImageTransform:
    """Pixel mapping from the source image to the model input.

    A source pixel centre ``u`` maps to ``(u + 0.5) * scale - 0.5 - offset`` per axis.

    Attributes:
        scale: ``(sx, sy)`` resize factors.
        offset: ``(ox, oy)`` crop offsets in resized pixels.
        out_size: ``(h, w)`` of the model input.
    """

    scale: tuple[float, float]
    offset: tuple[float, float]
    out_size: tuple[int, int]

    def apply_to_intrinsics(self, k: np.ndarray) -> np.ndarray:
        """Return the 3x3 intrinsics of the model input for source intrinsics ``k``."""
        k = np.asarray(k, dtype=np.float64)
        if k.shape != (3, 3):
            raise ValueError(f'intrinsics must be 3x3, got {k.shape}')
        sx, sy = self.scale
        ox, oy = self.offset
        out = k.copy()
        out[0, 0] *= sx
        out[1, 1] *= sy
        out[0, 1] *= sx
        out[0, 2] = (k[0, 2] + 0.5) * sx - 0.5 - ox
        out[1, 2] = (k[1, 2] + 0.5) * sy - 0.5 - oy
        return out

    def source_intrinsics(self, k: np.ndarray) -> np.ndarray:
        """Return the source image's 3x3 intrinsics for model-input intrinsics ``k`` (the
        inverse of :meth:`apply_to_intrinsics`)."""
        k = np.asarray(k, dtype=np.float64)
        sx, sy = self.scale
        ox, oy = self.offset
        out = k.copy()
        out[0, 0], out[0, 1], out[1, 1] = k[0, 0] / sx, k[0, 1] / sx, k[1, 1] / sy
        out[0, 2] = (k[0, 2] + 0.5 + ox) / sx - 0.5
        out[1, 2] = (k[1, 2] + 0.5 + oy) / sy - 0.5
        return out

    def apply_to_pixels(self, uv: np.ndarray) -> np.ndarray:
        """Return (N, 2) model-input pixel coordinates of (N, 2) source pixels ``uv``."""
        uv = np.asarray(uv, dtype=np.float64)
        return (uv + 0.5) * np.asarray(self.scale) - 0.5 - np.asarray(self.offset)


def _check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a contiguous HxWx3 uint8 array.

    Raises:
        ValueError: for another shape or dtype.
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f'expected an HxWx3 uint8 RGB image, got {arr.shape} {arr.dtype}')
    if arr.shape[0] < 16 or arr.shape[1] < 16:
        raise ValueError(f'image {arr.shape[1]}x{arr.shape[0]} is too small')
    return np.ascontiguousarray(arr)


def _crop_plan(
    width: int, height: int, size: int
) -> tuple[int, tuple[int, int], tuple[int, int, int, int]]:
    """Return the target long edge, the resized ``(w, h)`` and the crop box ``(l, t, r, b)``.

    Follows the official loader: 224 resizes the short side to 224 and crops a centre
    square; other sizes resize the long side and crop to multiples of 16.
    """
    if size == 224:
        long_edge = round(size * max(width / height, height / width))
    else:
        long_edge = size
    s = max(width, height)
    new_w, new_h = (int(round(x * long_edge / s)) for x in (width, height))
    cx, cy = new_w // 2, new_h // 2
    if size == 224:
        half = min(cx, cy)
        return long_edge, (new_w, new_h), (cx - half, cy - half, cx + half, cy + half)
    halfw, halfh = ((2 * cx) // 16) * 8, ((2 * cy) // 16) * 8
    if new_w == new_h:
        halfh = 3 * halfw // 4
    return long_edge, (new_w, new_h), (cx - halfw, cy - halfh, cx + halfw, cy + halfh)


def output_size(
    src_hw: tuple[int, int], image_size: SizeSpec, resize_mode: str = 'crop'
) -> tuple[int, int]:
    """Return the model input ``(h, w)`` for a source image of ``src_hw``.

    Raises:
        ValueError: for an unknown mode or a bad size.
    """
    if resize_mode == 'crop':
        if not isinstance(image_size, int):
            raise ValueError('resize_mode "crop" takes an int (long side, or 224 for square)')
        _, _, (l, t, r, b) = _crop_plan(src_hw[1], src_hw[0], image_size)
        return b - t, r - l
    if resize_mode in ('stretch', 'vlm3r'):
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        return int(h), int(w)
    raise ValueError(f'unknown resize_mode {resize_mode!r}; use one of {RESIZE_MODES}')


def _resize_bilinear(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize HxWxC float32 like ``F.interpolate(mode='bilinear', align_corners=False)``.

    Half-pixel centres, edge clamping and no antialiasing, as in the PyTorch op that
    VLM-3R applies to its frames.
    """
    src_h, src_w = arr.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # float32 arithmetic, as PyTorch uses for float inputs.
        scale = np.float32(n_in / n_out)
        coord = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
        coord = np.maximum(coord, np.float32(0.0))
        lo = np.minimum(np.floor(coord).astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, coord - lo.astype(np.float32)

    y0, y1, wy = axis(h, src_h)
    x0, x1, wx = axis(w, src_w)
    top = arr[y0][:, x0] * (1 - wx)[None, :, None] + arr[y0][:, x1] * wx[None, :, None]
    bottom = arr[y1][:, x0] * (1 - wx)[None, :, None] + arr[y1][:, x1] * wx[None, :, None]
    return top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]


def _siglip_pixels(arr: np.ndarray, size: int) -> np.ndarray:
    """Return the SigLIP-processed ``size`` x ``size`` x 3 float32 image in [-1, 1].

    As the reference image processor: PIL bicubic squash-resize of the 8-bit frame (the
    result is 8-bit again), scale by 1/255, normalise with mean = std = 0.5.
    """
    pil = Image.fromarray(arr)
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.BICUBIC)
    pixels = (np.asarray(pil, dtype=np.float64) * (1.0 / 255.0)).astype(np.float32)
    return (pixels - np.float32(0.5)) / np.float32(0.5)


def preprocess_image(
    image: np.ndarray, image_size: SizeSpec, resize_mode: str = 'crop', patch_size: int = 16
) -> tuple[np.ndarray, ImageTransform]:
    """Turn an RGB uint8 image into the normalised model input.

    Args:
        image: HxWx3 uint8 RGB.
        image_size: int long side for ``'crop'`` (224 = square crop); int or ``(h, w)``
            for ``'stretch'`` and ``'vlm3r'``.
        resize_mode: ``'crop'`` (official CUT3R), ``'stretch'`` (raw bilinear resize)
            or ``'vlm3r'`` (VLM-3R's input: the SigLIP-processed frame, resized).
        patch_size: the output sides must be multiples of it.

    Returns:
        ``(array (1, 3, h, w) float32 in [-1, 1], transform)``.

    Raises:
        ValueError: bad image, mode, or an output size not divisible by the patch size.
    """
    arr = _check_image(image)
    src_h, src_w = arr.shape[:2]
    if resize_mode == 'crop':
        if not isinstance(image_size, int):
            raise ValueError('resize_mode "crop" takes an int (long side, or 224 for square)')
        long_edge, (new_w, new_h), box = _crop_plan(src_w, src_h, image_size)
        pil = Image.fromarray(arr)
        shrink = max(src_w, src_h) > long_edge
        interp = Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC
        pil = pil.resize((new_w, new_h), interp).crop(box)
        out = np.asarray(pil, dtype=np.float32) / 255.0
        transform = ImageTransform(
            scale=(new_w / src_w, new_h / src_h), offset=(float(box[0]), float(box[1])),
            out_size=(out.shape[0], out.shape[1]),
        )
    elif resize_mode in ('stretch', 'vlm3r'):
        h, w = output_size((src_h, src_w), image_size, resize_mode)
        if resize_mode == 'stretch':
            out = _resize_bilinear(arr.astype(np.float32) / 255.0, h, w)
        else:
            # Normalised first, then resized, in the reference's order; both squash
            # resizes use half-pixel centres, so they compose to one scale per axis.
            siglip = _siglip_pixels(arr, VLM3R_VISION_SIZE)
            out = _resize_bilinear(siglip, h, w)
        transform = ImageTransform(
            scale=(w / src_w, h / src_h), offset=(0.0, 0.0), out_size=(h, w)
        )
    else:
        raise ValueError(f'unknown resize_mode {resize_mode!r}; use one of {RESIZE_MODES}')
    h, w = transform.out_size
    if h % patch_size or w % patch_size:
        raise ValueError(f'model input {h}x{w} is not a multiple of the patch size {patch_size}')
    if resize_mode != 'vlm3r':
        out = (out.astype(np.float32) - 0.5) / 0.5
    return np.ascontiguousarray(out.transpose(2, 0, 1)[None], dtype=np.float32), transform


def ray_map(intrinsics: np.ndarray, cam_to_ref: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Return the ``(6, h, w)`` float32 ray map used by CUT3R's ray-map encoder.

    Channels are the ray origin (camera centre) and a unit "direction" per pixel, in
    the reference (first-frame) camera, computed exactly as the official datasets do
    (``get_ray_map``): the camera-to-reference transform is applied to ``K^-1 p`` as a
    point (rotation and translation), then normalised. Matching that quirk keeps the
    input in the distribution the ray-map encoder was trained on.

    Args:
        intrinsics: 3x3 intrinsics of the model input image.
        cam_to_ref: 4x4 camera-to-reference transform.
        size: ``(h, w)`` of the model input.
    """
    h, w = size
    i, j = np.meshgrid(
        np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64), indexing='xy'
    )
    grid = np.stack([i, j, np.ones_like(i)], axis=-1).reshape(-1, 3)
    pose = np.asarray(cam_to_ref, dtype=np.float64)
    dirs = (np.linalg.inv(intrinsics) @ grid.T).T
    dirs = dirs @ pose[:3, :3].T + pose[:3, 3]
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    origin = np.broadcast_to(pose[:3, 3], dirs.shape)
    rays = np.concatenate([origin, dirs], axis=-1).reshape(h, w, 6)
    return np.ascontiguousarray(rays.transpose(2, 0, 1), dtype=np.float32)


def pose_encoding_to_matrix(encoding: np.ndarray) -> np.ndarray:
    """Return the 4x4 float64 camera-to-world matrix for ``[tx, ty, tz, qw, qx, qy, qz]``."""
    enc = np.asarray(encoding, dtype=np.float64).reshape(7)
    r, i, j, k = enc[3:7]
    two_s = 2.0 / max(float(np.dot(enc[3:7], enc[3:7])), 1e-12)
    rot = np.array([
        [1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r)],
        [two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r)],
        [two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j)],
    ])
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = enc[:3]
    return out


def relative_pose(reference: Optional[np.ndarray], cam_to_world: np.ndarray) -> np.ndarray:
    """Return ``inv(reference) @ cam_to_world`` (or ``cam_to_world`` if no reference)."""
    pose = np.asarray(cam_to_world, dtype=np.float64)
    if pose.shape != (4, 4):
        raise ValueError(f'cam_to_world must be 4x4, got {pose.shape}')
    if reference is None:
        return pose
    return np.linalg.inv(reference) @ pose
