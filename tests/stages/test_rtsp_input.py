"""RTSP input, its pieces: timestamps, parameter sets, discontinuities, reconnect backoff, credentials.

They run everywhere; the pipeline over a real GStreamer RTSP server is tests/stages/test_rtsp.py.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

from framepipe.core.settings import GatewaySettings
from framepipe.core.sources import redact, with_credentials
from framepipe.media.gop import DemuxedPacket, GopCutter, TimestampNormalizer
from framepipe.stages.gateway import backoff_delay, input_options


def test_timestamps_stay_monotonic_across_wraps_jumps_and_reconnects() -> None:
    """dts keeps growing through reordering, a 33-bit wrap and an hour's leap (jumps) and a new session."""
    norm = TimestampNormalizer(Fraction(1, 90000), max_jump_s=10.0)
    out = [norm(p, d) for p, d in [(None, None), (9000, None), (3000, None), (6000, 3000), (18000, 6000)]]
    dts = [o[1] for o in out]
    assert dts == sorted(dts)
    assert len(set(dts)) == len(dts)
    assert not any(o[2] for o in out)
    # 33-bit MPEG-TS wrap: the raw clock restarts near zero.
    wrapped = norm(2**33 - 3000 + 9000, 2**33 - 3000)
    assert wrapped[2]
    assert wrapped[1] > dts[-1]
    after = norm(3000, 0)
    assert after[2]
    assert after[1] > wrapped[1]
    # A forward leap of an hour is a jump too, not a one-hour GOP.
    leap = norm(3000 + 3600 * 90000, 3600 * 90000)
    assert leap[2]
    assert leap[1] - after[1] < 90000
    # A new RTSP session continues the old timeline without counting as a jump.
    last = norm(6000, 3000 + 3600 * 90000)[1]
    norm.restart(Fraction(1, 90000))
    _pts, dts2, jumped = norm(0, 0)
    assert not jumped
    assert dts2 > last


def _annexb(*nals: int) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + bytes([n]) + b"\x11\x22\x33" for n in nals)


def test_idr_without_parameter_sets_waits_for_them_then_reuses_them() -> None:
    """Joining a live H.264 stream mid-way with no SPS/PPS in the SDP: packets are skipped
    until an IDR carries SPS/PPS; a later IDR without them gets the last ones prepended."""
    cutter = GopCutter("h264", None, Fraction(1, 30))
    packets = [
        DemuxedPacket(0, 0, False, _annexb(0x41)),  # P slice: mid-GOP start
        DemuxedPacket(1, 1, True, _annexb(0x65)),  # IDR, but no SPS/PPS known yet
        DemuxedPacket(2, 2, True, _annexb(0x67, 0x68, 0x65)),  # SPS PPS IDR
        DemuxedPacket(3, 3, False, _annexb(0x41)),
        DemuxedPacket(4, 4, True, _annexb(0x65)),  # IDR alone
        DemuxedPacket(5, 5, False, _annexb(0x41)),
    ]
    gops = list(cutter.cut(packets))
    assert cutter.skipped_before_first == 2
    assert [len(g.packets) for g in gops] == [2, 2]
    assert gops[1].packets[0].data.startswith(_annexb(0x67, 0x68))
    assert [g.frame_offset for g in gops] == [2, 4]


def test_reconnect_marks_the_next_gop_as_a_discontinuity() -> None:
    """After mark_discontinuity() the next GOP is flagged and keeps counting on."""
    cutter = GopCutter("h264", None, Fraction(1, 30))
    first = list(cutter.cut([DemuxedPacket(0, 0, True, _annexb(0x67, 0x68, 0x65))]))
    cutter.mark_discontinuity()
    second = list(cutter.cut([DemuxedPacket(1, 1, True, _annexb(0x67, 0x68, 0x65))]))
    assert not first[0].discontinuity
    assert second[0].discontinuity
    assert second[0].index == 1


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    """Reconnect delays double per attempt up to the cap, each jittered within its upper half."""
    cfg = GatewaySettings(reconnect_initial_s=0.5, reconnect_max_s=8.0)
    rng = random.Random(1)
    delays = [[backoff_delay(a, cfg, rng) for _ in range(50)] for a in range(8)]
    for attempt, values in enumerate(delays):
        cap = min(8.0, 0.5 * 2**attempt)
        assert all(cap / 2 <= v <= cap for v in values)
        assert len({round(v, 6) for v in values}) > 40  # jittered: cameras do not retry in lockstep
    assert max(delays[-1]) <= 8.0


def test_credentials_come_from_env_and_never_show() -> None:
    """Credentials from the environment are URL-quoted into the URL (one in it wins) and redacted."""
    env = {"FRAMEPIPE_SOURCE_USERNAME": "ad min", "FRAMEPIPE_SOURCE_PASSWORD": "p@ss:word"}
    url = with_credentials("rtsp://cam.local:554/live", env)
    assert url == "rtsp://ad%20min:p%40ss%3Aword@cam.local:554/live"
    assert with_credentials("rtsp://u:p@cam/live", env) == "rtsp://u:p@cam/live"
    assert redact(url) == "rtsp://***@cam.local:554/live"
    assert (
        redact("cannot open 'rtsp://u:pw@h/x' and rtsp://a:b@c/")
        == "cannot open 'rtsp://***@h/x' and rtsp://***@c/"
    )
    assert input_options("rtsp://h/x", GatewaySettings(rtsp_transport="udp", read_timeout_s=2.5)) == {
        "rtsp_transport": "udp",
        "timeout": "2500000",
    }


def test_small_backward_steps_are_reordering_not_jumps() -> None:
    """A first packet with pts but no dts (pts runs ahead of dts with B-frames) and a
    slightly late dts do not count as jumps; the output stays strictly increasing."""
    norm = TimestampNormalizer(Fraction(1, 90000))
    raw = [(9000, None), (3000, None), (6000, 0), (18000, 3000), (12000, 2900), (15000, 9000)]
    out = [norm(p, d) for p, d in raw]
    assert not any(jumped for _, _, jumped in out)
    dts = [d for _, d, _ in out]
    assert all(b > a for a, b in itertools.pairwise(dts))
