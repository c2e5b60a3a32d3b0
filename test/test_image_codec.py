"""Image conversion: every supported encoding, and clear errors for bad input."""
import os
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest

from vlm3r_ros.ingest.image_codec import (
    ImageDecodeError, decode_color, decode_compressed, decode_depth, declared_sizes,
    encode_compressed, intrinsics_from_k)

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


# ----------------------------------------------------------------------------- bombs
OVER = (8192, 2100)  # 17.2 M pixels: over MAX_PIXELS, small enough to decode if unchecked


def _patched_jpeg(width: int, height: int, stray: bytes = b'', before: bytes = b'\xff\xc0',
                  progressive: bool = False) -> bytes:
    """Return a real JPEG whose SOFn declares width x height, with ``stray`` bytes inserted
    right before the marker ``before`` (libjpeg skips them with a warning)."""
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    data = bytearray(cv2.imencode('.jpg', np.zeros((48, 64, 3), np.uint8), params)[1].tobytes())
    sof = data.find(b'\xff\xc2' if progressive else b'\xff\xc0')
    data[sof + 5:sof + 7] = height.to_bytes(2, 'big')
    data[sof + 7:sof + 9] = width.to_bytes(2, 'big')
    at = data.find(before)
    return bytes(data[:at] + stray + data[at:])


@pytest.mark.parametrize('stray,before,progressive', [
    (b'\x00\x00', b'\xff\xc0', False),      # two stray bytes before the frame header
    (b'\x12', b'\xff\xc0', False),
    (b'junkjunk', b'\xff\xdb', False),      # before an earlier marker (DQT)
    (b'\x00\x00', b'\xff\xc2', True),       # progressive frame header (SOF2)
])
def test_bomb_behind_stray_bytes_is_refused_before_decoding(stray, before, progressive,
                                                          monkeypatch):
    bomb = _patched_jpeg(*OVER, stray, before, progressive)
    decoded = []  # the real decoder, recording that it was reached
    real_imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, 'imdecode', lambda *a: decoded.append(1) or real_imdecode(*a))
    started = time.monotonic()
    with pytest.raises(ImageDecodeError, match='image 8192x2100 exceeds the limit'):
        decode_compressed('jpeg', bomb)
    assert not decoded, 'the decoder ran on a frame over the pixel limit'
    assert time.monotonic() - started < 0.05  # refused from the header alone
    assert (8192, 2100) in declared_sizes(bomb)


def test_stray_bytes_in_a_normal_jpeg_still_decode():
    ok = _patched_jpeg(64, 48, b'\x00\x00')
    assert decode_compressed('jpeg', ok).shape == (48, 64, 3)
    assert declared_sizes(ok) == [(64, 48)]


def test_jpeg_without_frame_header_and_png_without_leading_ihdr_are_refused():
    no_sof = b'\xff\xd8\xff\xe0' + b'garbage' * 20 + b'\xff\xd9'
    with pytest.raises(ImageDecodeError, match='no frame header'):
        decode_compressed('jpeg', no_sof)
    png = encode_compressed(RGB, 'png')
    text = b'\x00\x00\x00\x04tEXtabcd\x00\x00\x00\x00'  # a chunk ahead of IHDR
    with pytest.raises(ImageDecodeError, match='does not start with an IHDR'):
        decode_compressed('png', png[:8] + text + png[8:])


def test_every_png_ihdr_is_checked():
    png = bytearray(encode_compressed(RGB, 'png'))
    png[16:20] = (8192).to_bytes(4, 'big')
    png[20:24] = (2100).to_bytes(4, 'big')
    with pytest.raises(ImageDecodeError, match='8192x2100 exceeds the limit'):
        decode_compressed('png', bytes(png))


def test_decoder_itself_refuses_more_than_max_pixels():
    # The second bound: with vlm3r_ros imported first, OpenCV's own limit refuses the bomb
    # even when called directly (no header scan in between). In a fresh process, because
    # OpenCV reads the limit when cv2 is imported.
    bomb_bytes, good_bytes = _patched_jpeg(*OVER, b'\x00\x00'), encode_compressed(RGB)
    code = textwrap.dedent(f'''
        import vlm3r_ros, cv2, numpy as np, os
        from vlm3r_ros.ingest import image_codec
        assert int(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS']) == image_codec.MAX_PIXELS
        assert int(os.environ['OPENCV_IO_MAX_IMAGE_WIDTH']) == image_codec.MAX_SIDE
        bomb = np.frombuffer({bomb_bytes!r}, np.uint8)
        try:
            out = cv2.imdecode(bomb, cv2.IMREAD_COLOR)
        except cv2.error:
            out = None
        print('decoded' if out is not None else 'refused')
        ok = cv2.imdecode(np.frombuffer({good_bytes!r}, np.uint8), 1)
        print(ok.shape)
    ''')
    env = {k: v for k, v in os.environ.items() if not k.startswith('OPENCV_IO_MAX')}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['refused', '(6,', '8,', '3)']


def test_header_scan_is_cheap_on_a_real_frame():
    frame = encode_compressed(RNG.integers(0, 256, size=(480, 640, 3), dtype=np.uint8))
    started = time.perf_counter()
    for _ in range(20):
        assert declared_sizes(frame) == [(640, 480)]
    assert (time.perf_counter() - started) / 20 < 0.005
