"""PriorityClasses: what the scheduler keeps when a node is full, and what waits for a new one.

A scaled-up stage pod that fits nowhere stays Pending; a cluster autoscaler or
Karpenter sees the Pending pod and its resource requests and adds a node. Until
the node is ready the scheduler may make room by preempting lower-priority pods,
so the ingest path (NATS, camera gateways), whose loss drops live video, is
above the stages, whose backlog waits in JetStream.
"""

from __future__ import annotations

from framepipe.cluster.nats import INGEST_PRIORITY, Obj, meta

#: NATS and the camera gateways: never preempted by the pipeline's own scale-ups.
INGEST = INGEST_PRIORITY
#: decoder, inference, encoder, sink, the setup Job: work that waits in JetStream.
PIPELINE = "framepipe-pipeline"


def priority_classes() -> list[Obj]:
    def one(name: str, value: int, description: str) -> Obj:
        return {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": meta(name, "scheduling"),
            "value": value,
            "globalDefault": False,
            "preemptionPolicy": "PreemptLowerPriority",
            "description": description,
        }

    return [
        one(INGEST, 100000, "framepipe NATS and camera gateways: losing them loses live video."),
        one(PIPELINE, 10000, "framepipe stages: their backlog waits in JetStream while a node is added."),
    ]
