"""A live camera while the JetStream store is full: drop GOPs, count them, record the gap.

A file source waits for space (``bus.publish`` waits out a full store; nothing is
lost). A live camera cannot wait: it keeps sending, and a gateway that held its
GOPs would stop reading it (the reader's queue is bounded) and then publish
minutes-old video. The rule for live sources:

* A GOP whose publish the server refuses for a full store (JetStream API errors
  10023/10047) is dropped at once, not retried and not queued. Other outages
  (reconnect, election, no quorum) are still waited out as for every publish.
* The first refusal logs one ``gateway.store_full`` line (what happened, what to
  do); every dropped GOP is counted in ``framepipe_gateway_dropped_gops_total
  {camera, reason="store_full"}`` and in the camera's source state
  (``dropped_gops``, shown by ``framepipe status``), not logged.
* Each new GOP the camera sends tries once more, so the gateway resumes with the
  first GOP the store takes (old GOPs aged out, a consumer acked a work-queue
  message, a filler was deleted): one ``gateway.store_space_back`` line, and a gap
  event on ``dets.<camera>`` as after a reconnect.
* The numbering stays dense: a dropped GOP gives its number to the next one that
  is stored (marked discontinuous), so the sink, which writes GOPs in order, never
  waits for a GOP that will not come.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import nats.js.errors
import structlog

from framepipe.core import bus
from framepipe.core.health import GATEWAY_DROPPED_GOPS
from framepipe.media.gop import Gop

log = structlog.get_logger("framepipe.gateway")
STORE_FULL = "store_full"
WHAT_TO_DO = (
    "free JetStream space: raise local.nats_max_file_store (in Kubernetes the NATS volume), "
    "lower streams.video_max_bytes or video_max_age_s so old GOPs age out sooner, and check that "
    "the stages are consuming (framepipe status)"
)


class StoreFullError(Exception):
    """The server refused a publish because its JetStream store is full."""


def is_store_full(exc: BaseException) -> bool:
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code in bus.FULL_STORE_CODES


@dataclass
class FullStoreDrops:
    """One live camera's GOPs dropped for a full store, and the renumbering that keeps it dense."""

    camera: str
    #: GOPs and frames dropped since the gateway started (the renumbering offset).
    gops: int = 0
    frames: int = 0
    #: the current episode: when its first GOP was dropped (wall clock), and how many so far.
    since: float | None = None
    episode_gops: int = 0

    @property
    def dropping(self) -> bool:
        return self.since is not None

    def renumber(self, gop: Gop) -> Gop:
        """``gop`` numbered as if the dropped GOPs had never been cut."""
        if not self.gops:
            return gop
        return dataclasses.replace(
            gop,
            index=gop.index - self.gops,
            frame_offset=gop.frame_offset - self.frames,
            discontinuity=gop.discontinuity or self.dropping,
        )

    def index(self, reader_index: int) -> int:
        return reader_index - self.gops

    def drop(self, gop: Gop) -> None:
        """Count ``gop`` (renumbered) as dropped; one log line per episode."""
        if self.since is None:
            self.since = time.time()
            log.warning(
                "gateway.store_full",
                camera=self.camera,
                gop=gop.index,
                rule="live source: GOPs are dropped, not queued, until the store takes one again; "
                "the gap is recorded and counted",
                what_to_do=WHAT_TO_DO,
            )
        self.gops += 1
        self.frames += len(gop.packets)
        self.episode_gops += 1
        GATEWAY_DROPPED_GOPS.labels(camera=self.camera, reason=STORE_FULL).inc()

    def resumed(self, gop: int) -> tuple[float, float, int]:
        """End the episode at stored GOP ``gop``: (since, seconds dropped, GOPs dropped)."""
        assert self.since is not None
        since, gops = self.since, self.episode_gops
        down_s = time.time() - since
        log.info(
            "gateway.store_space_back",
            camera=self.camera,
            gop=gop,
            dropped_gops=gops,
            dropped_s=round(down_s, 2),
        )
        self.since, self.episode_gops = None, 0
        return since, down_s, gops
