"""Input plausibility checks, rate-limited logging, stamp-gap loss estimates, bounded
echoes: the pure logic behind issue 11 items 8-10 (no ROS)."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from vlm3r_ros.ingest.image_codec import ImageDecodeError, decode_compressed, intrinsics_from_k
from vlm3r_ros.pipeline.errors import ErrorCode, RequestError, bound_message, echo
from vlm3r_ros.pipeline.input_checks import (calibration_problem, depth_size_problem,
                                              pose_matrix, stamp_problem)
from vlm3r_ros.pipeline.input_monitor import InputMonitor
from vlm3r_ros.pipeline.log_limit import RateLimitedLog
from vlm3r_ros.pipeline.requests import validate_query
from vlm3r_ros.pipeline.stream_gaps import StampGapDetector, estimate_period

PERIOD = 33_333_333


# ----------------------------------------------------------------------------- item 8
@pytest.mark.parametrize('sec, nanosec, text', [
    (0, 0, 'stamp is zero'), (-1, 0, 'negative'), (-5, 500, 'negative'),
    (3, 1_000_000_000, 'not below 1e9')])
def test_bad_stamps_are_named(sec, nanosec, text):
    assert text in stamp_problem(sec, nanosec)


@pytest.mark.parametrize('sec, nanosec', [(0, 1), (0, 33_000_000), (1_700_000_000, 999_999_999)])
def test_good_stamps_pass(sec, nanosec):
    assert stamp_problem(sec, nanosec) is None


@pytest.mark.parametrize('x', [1e6, -2e7, 1e300])
def test_far_positions_are_refused(x):
    with pytest.raises(ValueError, match='beyond max_pose_position_m=10000'):
        pose_matrix((0.0, x, 0.0), (1.0, 0.0, 0.0, 0.0))
    assert pose_matrix((0.0, x, 0.0), (1.0, 0.0, 0.0, 0.0), max_position_m=1e301)[1, 3] == x


@pytest.mark.parametrize('quat', [(2.0, 0, 0, 0), (0.5, 0, 0, 0), (1.0, 1.0, 0, 0),
                                  (0.9, 0, 0, 0)])
def test_quaternions_far_from_unit_are_refused(quat):
    with pytest.raises(ValueError, match='quaternion has norm'):
        pose_matrix((0.0, 0.0, 0.0), quat)


def test_near_unit_quaternions_are_normalised():
    s = math.sqrt(0.5) * 1.002  # norm 1.002: within tf2's tolerance
    m = pose_matrix((1.0, 2.0, 3.0), (s, 0.0, 0.0, s))
    assert np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3))
    assert np.allclose(m[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-9)
    assert list(m[:3, 3]) == [1.0, 2.0, 3.0]


@pytest.mark.parametrize('quat, pos, text', [
    ((0.0, 0, 0, 0), (0, 0, 0), 'not a valid quaternion'),
    ((math.nan, 0, 0, 0), (0, 0, 0), 'not a valid quaternion'),
    ((1.0, 0, 0, 0), (math.inf, 0, 0), 'not finite')])
def test_invalid_poses_keep_their_reasons(quat, pos, text):
    with pytest.raises(ValueError, match=text):
        pose_matrix(pos, quat)


def test_depth_of_another_size_is_named_never_resized():
    assert depth_size_problem((48, 64), (48, 64)) is None
    assert 'the same aspect ratio' in depth_size_problem((24, 32), (48, 64))
    assert '32x24 does not match its colour frame 64x48' in depth_size_problem((24, 32), (48, 64))
    assert 'another aspect ratio' in depth_size_problem((480, 848), (480, 640))


def test_calibration_for_another_resolution_is_named():
    assert calibration_problem((64, 48), (64, 48)) is None
    assert 'camera_info is for 1280x720 but the colour frames are 64x48' in \
        calibration_problem((1280, 720), (64, 48))


@pytest.mark.parametrize('k, text', [
    ([1e-30, 0, 32, 0, 50, 24, 0, 0, 1], 'fx=1e-30'),
    ([50, 0, 32, 0, 1e-30, 24, 0, 0, 1], 'fy=1e-30'),
    ([1e9, 0, 32, 0, 1e9, 24, 0, 0, 1], 'field of view'),
    ([50, 0, 32, 0, 500, 24, 0, 0, 1], 'differ by more than'),
    ([50, 0, 9000, 0, 50, 24, 0, 0, 1], 'principal point'),
])
def test_implausible_intrinsics_are_refused(k, text):
    with pytest.raises(ImageDecodeError, match=text):
        intrinsics_from_k(k, 64, 48)


def test_real_calibrations_pass():
    intrinsics_from_k([615.0, 0, 320.0, 0, 615.0, 240.0, 0, 0, 1], 640, 480)  # RealSense D435
    intrinsics_from_k([190.0, 0, 320.0, 0, 190.0, 240.0, 0, 0, 1], 640, 480)  # wide, ~118 deg
    intrinsics_from_k([5000.0, 0, 960.0, 0, 5000.0, 540.0, 0, 0, 1], 1920, 1080)  # telephoto


# ----------------------------------------------------------------------------- item 9
def test_echoed_fields_are_bounded():
    huge = 'x' * (1 << 20)
    with pytest.raises(RequestError) as err:
        validate_query('How many?', [], huge, (0, 0), 0, max_question_chars=100)
    assert err.value.code == ErrorCode.INVALID_REQUEST
    assert len(err.value.message) < 200 and '(1048576 characters)' in err.value.message
    assert echo('short') == "'short'" and echo(12) == '12'
    assert len(bound_message('y' * 50_000)) == 1000
    with pytest.raises(ImageDecodeError) as bad:
        decode_compressed('f' * 100_000, b'GIF89a....')
    assert len(str(bad.value)) < 200


def test_rate_limit_is_per_reason_and_never_goes_silent_for_good():
    log = RateLimitedLog(interval_s=5.0, max_lines=40)
    assert log.line('a', 0.0) == 'a'
    assert all(log.line('a', 0.1 * i) is None for i in range(1, 30))  # same reason: quiet
    assert log.line('a', 5.5) == 'a (29 more since the last report)'
    # More distinct reasons than any fixed set: new ones still get through later.
    lines = [log.line(f'reason {i}', 20.0) for i in range(200)]
    assert sum(line is not None for line in lines) == 40  # the cap per interval
    assert log.line('a brand-new reason', 20.1) is None  # cap reached in this interval
    assert log.line('a brand-new reason', 25.1) == 'a brand-new reason'
    assert log.line('reason 199', 25.2) == 'reason 199'
    assert len(log.line('z' * 10_000, 40.0)) < 600


# ----------------------------------------------------------------------------- item 10
def stream(n, period=PERIOD, keep=lambda i: True, jitter_ns=0, seed=0):
    rng = random.Random(seed)
    return [10**9 + i * period + rng.randint(-jitter_ns, jitter_ns) for i in range(n)
            if keep(i)]


def run(detector, stamps, rate_hz=30.0):
    for j, stamp in enumerate(stamps):
        detector.observe(stamp, j / rate_hz)
    return detector


def test_no_loss_on_a_whole_stream_with_jitter():
    d = run(StampGapDetector(), stream(300, jitter_ns=2_000_000))
    assert d.lost == 0 and abs(d.period_s - PERIOD / 1e9) < 1e-3


@pytest.mark.parametrize('received_share', [0.75, 0.5, 0.3])
def test_random_loss_is_estimated(received_share):
    rng = random.Random(1)
    keep = {i for i in range(600) if rng.random() < received_share} | {0, 599}
    stamps = stream(600, keep=keep.__contains__, jitter_ns=1_000_000)
    d = run(StampGapDetector(), stamps)
    truly_lost = 600 - len(stamps)
    assert abs(d.lost - truly_lost) <= max(3, 0.05 * truly_lost), (d.lost, truly_lost)


def test_the_period_is_found_when_no_two_consecutive_frames_arrive():
    # Gaps of 2 and 3 periods only: their gcd is the period.
    keep = {i for i in range(600) if i % 5 in (0, 2)}
    d = run(StampGapDetector(), stream(600, jitter_ns=1_000_000, keep=keep.__contains__))
    assert abs(d.period_s - PERIOD / 1e9) < 1e-4
    assert d.lost == max(keep) + 1 - len(keep)


def test_a_known_rate_replaces_the_estimate():
    rng = random.Random(3)
    keep = {0, 599} | {i for i in range(600) if rng.random() < 0.03}  # 97 % lost
    stamps = stream(600, keep=keep.__contains__, jitter_ns=3_000_000)
    assert run(StampGapDetector(pause_s=30.0), stamps).lost < 600 - len(keep)
    known = run(StampGapDetector(pause_s=30.0, rate_hz=30.0), stamps)
    assert known.lost == 600 - len(keep) and known.period_s == pytest.approx(PERIOD / 1e9)


def test_irregular_stamps_claim_no_loss():
    rng = random.Random(2)
    stamps, t = [], 10**9
    for _ in range(200):
        t += rng.randint(5_000_000, 200_000_000)
        stamps.append(t)
    d = run(StampGapDetector(), stamps)
    assert d.period_s is None and d.lost == 0


def test_pauses_loops_and_duplicates_are_not_losses():
    d = StampGapDetector(pause_s=3.0)
    stamps = stream(30) + [s + 10 * 10**9 for s in stream(30)]  # a 10 s pause
    stamps += stream(30)  # stamps go back: a looping bag
    stamps += [stamps[-1], stamps[-1] - PERIOD // 2]  # a duplicate, a slightly older one
    run(d, stamps)
    assert d.lost == 0 and d.resets == 1


def test_monitor_warns_with_qos_advice_and_names_zero_stamp_topics():
    monitor = InputMonitor('/cam/image_raw', 'best_effort', 'raw')
    for j, stamp in enumerate(stream(91, keep=lambda i: i % 3 != 1)):
        monitor.frame(stamp, j * 0.05)
    report = monitor.report(3.0)
    assert report.loss.lost == 30 and 0.3 < report.loss.recent_ratio < 0.4
    assert 'lost before the node' in report.warnings[0]
    assert 'FASTDDS_DEFAULT_PROFILES_FILE' in report.warnings[0]
    line = monitor.bad_stamp('image', '/cam/image_raw', stamp_problem(0, 0), 3.0)
    assert line.startswith('rejected image on /cam/image_raw: stamp is zero')
    assert monitor.bad_stamp('image', '/cam/image_raw', stamp_problem(0, 0), 3.1) is None
    report = monitor.report(3.2)
    assert report.counters.stamps_rejected == 2
    assert any('/cam/image_raw' in w and 'stamp is zero' in w for w in report.warnings)
    assert monitor.report(20.0).warnings == []  # problems leave after the window
