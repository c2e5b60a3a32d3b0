"""Image conversion: every supported encoding, and clear errors for bad input."""
import cv2
import numpy as np
import pytest

from vlm3r_ros.ingest.image_codec import (
    ImageDecodeError, decode_color, decode_compressed, decode_depth, encode_compressed,
    intrinsics_from_k)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)


def fields(arr: np.ndarray, pad: int = 0):
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1).view(np.uint8).reshape(h, -1)
    padded = np.zeros((h, row.shape[1] + pad), np.uint8)
    padded[:, :row.shape[1]] = row
    return h, w, padded.shape[1], padded.tobytes()


@pytest.mark.parametrize('encoding,make', [
    ('rgb8', lambda x: x),
    ('bgr8', lambda x: x[:, :, ::-1]),
    ('rgba8', lambda x: np.dstack([x, np.full(x.shape[:2], 7, np.uint8)])),
    ('bgra8', lambda x: np.dstack([x[:, :, ::-1], np.full(x.shape[:2], 7, np.uint8)])),
])
def test_color_encodings_round_trip(encoding, make):
    for pad in (0, 3):  # rows padded beyond width*channels must be skipped
        out = decode_color(encoding, *fields(np.ascontiguousarray(make(RGB)), pad))
        assert out.dtype == np.uint8 and out.flags['C_CONTIGUOUS']
        np.testing.assert_array_equal(out, RGB)


def test_mono_encodings():
    grey = RGB[:, :, 0]
    out8 = decode_color('mono8', *fields(grey[:, :, None]))
    np.testing.assert_array_equal(out8, np.repeat(grey[:, :, None], 3, axis=2))
    g16 = grey.astype(np.uint16) << 8 | 0x55
    for big in (False, True):
        data = g16.astype('>u2' if big else '<u2')
        h, w = data.shape
        out16 = decode_color('mono16', h, w, w * 2, data.tobytes(), is_bigendian=big)
        np.testing.assert_array_equal(out16[:, :, 1], grey)


@pytest.mark.parametrize('encoding,code', [
    ('yuv422', cv2.COLOR_RGB2YUV_UYVY), ('uyvy', cv2.COLOR_RGB2YUV_UYVY),
    ('yuv422_yuy2', cv2.COLOR_RGB2YUV_YUY2), ('yuyv', cv2.COLOR_RGB2YUV_YUY2)])
def test_yuv_variants_decode_to_close_rgb(encoding, code):
    flat = np.full((4, 8, 3), (200, 40, 90), np.uint8)
    packed = cv2.cvtColor(flat, code)  # OpenCV's own packer for that byte order
    assert packed.shape == (4, 8, 2)
    out = decode_color(encoding, 4, 8, 16, packed.tobytes())
    assert np.abs(out.astype(int) - flat.astype(int)).max() <= 3
    swapped = 'yuyv' if code == cv2.COLOR_RGB2YUV_UYVY else 'uyvy'
    wrong = decode_color(swapped, 4, 8, 16, packed.tobytes())
    assert np.abs(wrong.astype(int) - flat.astype(int)).max() > 20  # byte order matters


def test_depth_encodings():
    mm = np.array([[0, 1000], [2500, 65535]], np.uint16)
    d = decode_depth('16UC1', 2, 2, 4, mm.tobytes())
    assert np.isnan(d[0, 0]) and d[0, 1] == pytest.approx(1.0) and d[1, 0] == pytest.approx(2.5)
    m = np.array([[np.nan, 1.5], [-1.0, np.inf]], np.float32)
    d = decode_depth('32FC1', 2, 2, 8, m.tobytes())
    assert d[0, 1] == pytest.approx(1.5) and np.isnan(d[[0, 1, 1], [0, 0, 1]]).all()


@pytest.mark.parametrize('fmt', ['jpeg', 'png'])
def test_compressed_round_trip(fmt):
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, :24] = (255, 0, 0)
    out = decode_compressed(fmt, encode_compressed(img, fmt))
    assert out.shape == img.shape
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 4
    assert out[16, 4, 0] > 200 and out[16, 4, 2] < 60  # red stays red (RGB order)


@pytest.mark.parametrize('call,match', [
    (lambda: decode_color('bayer_rggb8', 2, 2, 2, bytes(4)), 'unsupported encoding'),
    (lambda: decode_color('rgb8', 0, 4, 12, b''), 'zero size'),
    (lambda: decode_color('rgb8', 1, 16384, 49152, bytes(49152)), 'exceeds the limit'),
    (lambda: decode_color('rgb8', 2, 2, 6, bytes(11)), 'data has 11 bytes'),
    (lambda: decode_color('rgb8', 2, 2, 5, bytes(10)), 'step 5 is smaller'),
    (lambda: decode_color('yuyv', 2, 3, 6, bytes(12)), 'even width'),
    (lambda: decode_color('32FC1', 1, 1, 4, bytes(4)), 'depth encoding'),
    (lambda: decode_depth('rgb8', 1, 1, 3, bytes(3)), 'unsupported depth'),
    (lambda: decode_compressed('jpeg', b''), 'no data'),
    (lambda: decode_compressed('jpeg', b'GIF89a....'), 'neither JPEG nor PNG'),
    (lambda: decode_compressed('jpeg', encode_compressed(RGB)[:-40]), 'truncated'),
    (lambda: decode_compressed('png', encode_compressed(RGB, 'png')[:30]), 'PNG data is truncated'),
    (lambda: intrinsics_from_k([0.0] * 9, 640, 480), 'invalid'),
    (lambda: intrinsics_from_k([np.nan, 0, 1, 0, 1, 1, 0, 0, 1], 640, 480), 'invalid'),
    (lambda: intrinsics_from_k([500, 0, 320, 0, 500, 240, 0, 0, 1], 0, 480), 'zero size'),
])
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ImageDecodeError, match=match):
        call()


def test_intrinsics_scale():
    k = intrinsics_from_k([500, 0, 320, 0, 400, 240, 0, 0, 1], 640, 480)
    s = k.scaled(320, 240)
    assert (s.fx, s.fy, s.cx, s.cy) == (250, 200, 160, 120)
    np.testing.assert_allclose(k.matrix()[0], [500, 0, 320])
