"""What the output mode changes in scaling: with ``[output] mode = "on-demand"`` the encoder
works only for watched cameras (and the cameras' own recordings need none of it); with
``"overlay"`` it gets no work at all (the analysis stage remuxes, stages/output_routing.py),
except for cameras given burn-in or on-demand one by one.

So its replicas may sleep at zero (``min_replicas = 0``: KEDA's ``minReplicaCount`` and the
local autoscaler's floor; the lag trigger wakes it at the first live GOP), and the
feed-forward demand, which counts cameras, says nothing about its work and is left out.
Cameras set to on-demand or overlay one by one (``framepipe cameras mode``) under another default keep
the encoder's own settings: the others still need it.
"""

from __future__ import annotations

import dataclasses

from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.topology import Names

ON_DEMAND = "on-demand"
OVERLAY = "overlay"
#: default modes in which the encoder has work only on demand (its lag says when).
ENCODER_ON_DEMAND = (ON_DEMAND, OVERLAY)


def for_output_mode(scaling: StageScaling, mode: str) -> StageScaling:
    if mode not in ENCODER_ON_DEMAND:
        return scaling
    encoder: ScalingSettings = getattr(scaling, Names.ENCODER)
    return scaling.replace(
        **{Names.ENCODER: dataclasses.replace(encoder, min_replicas=0, feed_forward=False)}
    )
