"""Cluster-only settings: scaling, resources, images, NATS deployment.

These complement :class:`framepipe.core.settings.Settings` (which owns every
name and every setting a stage process reads) with what only the rendered
Kubernetes manifests need. They load from the same TOML file:

.. code-block:: toml

    [k8s]
    namespace = "framepipe"
    image = "registry.example.com/framepipe:0.1.0"

    [k8s.resources.inference]
    cpu_request = "1"
    memory_limit = "3Gi"

    [scaling.decoder]
    max_replicas = 12
    lag_threshold = 6

:class:`ScalingSettings` mean the same as KEDA's ScaledObject fields and the
HPA behavior; the local autoscaler should read the same values so that a tuned
setting behaves the same on a laptop and in a cluster.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Self, TypeVar

from framepipe.core.errors import ConfigError
from framepipe.core.settings.cameras import DeclaredCamera
from framepipe.core.topology import STAGES

V = TypeVar("V")
#: the HPA's ``behavior.*.selectPolicy`` values.
SELECT_POLICIES = ("Max", "Min", "Disabled")
#: what runs in a cluster: NATS, the setup Job, the web server, the demand endpoint KEDA
#: reads (cluster/demand.py), then every stage of the table.
WORKLOADS = ("nats", "setup", "web", "demand", *(spec.name for spec in STAGES))

_CPU = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")
_MEMORY = re.compile(r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
_LABEL_KEY = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _check(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where} {message}")


@dataclass(frozen=True)
class Resources:
    """Requests/limits of one container (Kubernetes quantity strings)."""

    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "256Mi"
    memory_limit: str = "1Gi"

    def validate(self, where: str) -> None:
        for name in ("cpu_request", "cpu_limit"):
            value = getattr(self, name)
            _check(
                bool(_CPU.match(value)),
                f"{where}.{name}",
                f"must be a CPU quantity like '500m' or '2', got {value!r}",
            )
        for name in ("memory_request", "memory_limit"):
            value = getattr(self, name)
            _check(
                bool(_MEMORY.match(value)),
                f"{where}.{name}",
                f"must be a memory quantity like '512Mi', got {value!r}",
            )


@dataclass(frozen=True)
class ScalingSettings:
    """KEDA ScaledObject + HPA behavior of one stage (units: messages, seconds).

    replicas = ceil((num_pending + num_ack_pending) / lag_threshold), clamped to
    [min_replicas, max_replicas]; with ``min_replicas = 0`` the stage sleeps
    until the lag exceeds ``activation_lag_threshold``.
    """

    min_replicas: int = 1
    max_replicas: int = 32
    lag_threshold: int = 8
    activation_lag_threshold: int = 0
    polling_interval_s: int = 10
    cooldown_period_s: int = 300
    scale_up_stabilization_s: int = 0
    scale_up_percent: int = 100
    scale_up_pods: int = 4
    scale_up_period_s: int = 15
    scale_down_stabilization_s: int = 120
    scale_down_percent: int = 50
    scale_down_period_s: int = 60
    fallback_replicas: int = 2
    fallback_failure_threshold: int = 3
    #: ``behavior.scale{Up,Down}.tolerance`` (Kubernetes >= 1.33, HPAConfigurableTolerance):
    #: no change while 1 - down <= usage ratio <= 1 + up. 0.1 is the cluster-wide default
    #: and is not rendered.
    scale_up_tolerance: float = 0.1
    scale_down_tolerance: float = 0.1
    #: ``behavior.scale{Up,Down}.selectPolicy``: Max (the biggest change), Min, Disabled.
    scale_up_select_policy: str = "Max"
    scale_down_select_policy: str = "Max"
    #: a Pods scale-down policy besides the Percent one (replicas per period; 0: none).
    scale_down_pods: int = 0
    #: a second trigger: the replicas the registered cameras need, from each stage's
    #: measured cost (``framepipe.scaling.demand``); KEDA/HPA take the higher of the two.
    feed_forward: bool = True
    #: the share of a replica's measured throughput the feed-forward demand plans to use.
    feed_forward_utilization: float = 0.8
    #: one replica's measured throughput in GOPs/s (``bench/results/scaling.json``); the
    #: feed-forward demand needs it, so 0 leaves this stage on the lag trigger alone.
    gops_per_replica: float = 0.0

    def validate(self, where: str) -> None:
        _check(self.min_replicas >= 0, f"{where}.min_replicas", f"must be >= 0, got {self.min_replicas}")
        _check(self.max_replicas >= 1, f"{where}.max_replicas", f"must be >= 1, got {self.max_replicas}")
        _check(
            self.min_replicas <= self.max_replicas,
            f"{where}.min_replicas",
            f"({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})",
        )
        _check(self.lag_threshold >= 1, f"{where}.lag_threshold", f"must be >= 1, got {self.lag_threshold}")
        _check(
            self.activation_lag_threshold >= 0,
            f"{where}.activation_lag_threshold",
            f"must be >= 0, got {self.activation_lag_threshold}",
        )
        for name in (
            "polling_interval_s",
            "scale_up_period_s",
            "scale_down_period_s",
            "scale_up_percent",
            "scale_up_pods",
            "scale_down_percent",
            "fallback_failure_threshold",
        ):
            value = getattr(self, name)
            _check(value >= 1, f"{where}.{name}", f"must be >= 1, got {value}")
        for name in ("cooldown_period_s", "scale_up_stabilization_s", "scale_down_stabilization_s"):
            value = getattr(self, name)
            _check(0 <= value <= 3600, f"{where}.{name}", f"must be 0..3600, got {value}")
        _check(
            1 <= self.fallback_replicas <= self.max_replicas,
            f"{where}.fallback_replicas",
            f"must be 1..max_replicas ({self.max_replicas}), got {self.fallback_replicas}",
        )
        for name in ("scale_up_tolerance", "scale_down_tolerance"):
            value = getattr(self, name)
            _check(value >= 0, f"{where}.{name}", f"must be >= 0, got {value}")
        for name in ("scale_up_select_policy", "scale_down_select_policy"):
            value = getattr(self, name)
            _check(
                value in SELECT_POLICIES,
                f"{where}.{name}",
                f"must be one of {', '.join(SELECT_POLICIES)}, got {value!r}",
            )
        _check(
            self.scale_down_pods >= 0, f"{where}.scale_down_pods", f"must be >= 0, got {self.scale_down_pods}"
        )
        _check(
            self.gops_per_replica >= 0,
            f"{where}.gops_per_replica",
            f"must be >= 0, got {self.gops_per_replica}",
        )
        _check(
            0 < self.feed_forward_utilization <= 1,
            f"{where}.feed_forward_utilization",
            f"must be in (0, 1], got {self.feed_forward_utilization}",
        )


class _PerName(Generic[V]):
    """An immutable table of one value per name (``[scaling.<stage>]``, ``[k8s.resources.<x>]``),
    whose names and defaults come from the stage table; read as ``table.decoder``."""

    where: ClassVar[str]
    kind: ClassVar[type[Any]]

    def __init__(self, **given: V) -> None:
        defaults = self.defaults()
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ConfigError(
                f"unknown setting {self.where}.{unknown[0]} (known: {', '.join(sorted(defaults))})"
            )
        values = {name: given.get(name, default) for name, default in defaults.items()}
        for name, value in values.items():
            value.validate(f"{self.where}.{name}")  # type: ignore[attr-defined]
        object.__setattr__(self, "_values", MappingProxyType(values))

    @classmethod
    def defaults(cls) -> dict[str, V]:
        raise NotImplementedError

    @classmethod
    def from_table(cls, where: str, table: Any, build: Callable[[str, type[Any], Any], Any]) -> Self:
        """Built by the loader from ``[<where>.<name>]`` tables."""
        if not isinstance(table, dict):
            raise ConfigError(f"[{where}] must be a table")
        known = cls.defaults()
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(f"unknown setting {where}.{unknown[0]} (known: {', '.join(sorted(known))})")
        return cls(**{name: build(f"{where}.{name}", cls.kind, values) for name, values in table.items()})

    def __getattr__(self, name: str) -> V:
        values: Mapping[str, V] = object.__getattribute__(self, "_values")
        try:
            return values[name]
        except KeyError:
            raise AttributeError(f"{self.where} has no {name!r}") from None

    def __setattr__(self, name: str, value: object) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to {self.where}.{name}")

    def __getitem__(self, name: str) -> V:
        return self.__getattr__(name)

    def names(self) -> tuple[str, ...]:
        return tuple(object.__getattribute__(self, "_values"))

    def replace(self, **changes: V) -> Self:
        """A copy with some names' values replaced."""
        return type(self)(**{**object.__getattribute__(self, "_values"), **changes})

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        mine: Mapping[str, V] = object.__getattribute__(self, "_values")
        return dict(mine) == dict(object.__getattribute__(other, "_values"))

    def __hash__(self) -> int:
        return hash(tuple(object.__getattribute__(self, "_values").items()))

    def __repr__(self) -> str:
        values = object.__getattribute__(self, "_values")
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in values.items())})"


class WorkloadResources(_PerName[Resources]):
    """``[k8s.resources.<workload>]``: NATS, the setup Job, then each stage of the table."""

    where = "k8s.resources"
    kind = Resources

    @classmethod
    def defaults(cls) -> dict[str, Resources]:
        return {
            "nats": Resources("250m", "2", "512Mi", "2Gi"),
            "setup": Resources("50m", "500m", "128Mi", "256Mi"),
            "web": Resources("100m", "1", "256Mi", "1Gi"),
            "demand": Resources("20m", "200m", "96Mi", "192Mi"),
            **{spec.name: Resources(*spec.resources) for spec in STAGES},
        }


class StageScaling(_PerName[ScalingSettings]):
    """``[scaling.<stage>]``: KEDA + HPA settings of each scaled stage of the table."""

    where = "scaling"
    kind = ScalingSettings

    @classmethod
    def defaults(cls) -> dict[str, ScalingSettings]:
        return {
            spec.name: ScalingSettings(lag_threshold=spec.lag_threshold) for spec in STAGES if spec.scaled
        }


@dataclass(frozen=True)
class K8sSettings:
    """Where and how framepipe runs in a cluster."""

    namespace: str = "framepipe"
    image: str = "ghcr.io/framepipe/framepipe:0.1.0"
    gpu_image: str = "ghcr.io/framepipe/framepipe-gpu:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    nats_image: str = "nats:2.11-alpine"
    nats_replicas: int = 3
    stream_replicas: int = 3
    nats_storage_gib: int = 20
    nats_storage_class: str = ""
    nats_account: str = "FRAMEPIPE"
    nats_auth: bool = True
    nats_strict_permissions: bool = True
    nats_monitoring_endpoint: str = ""
    keda_namespace: str = "keda"
    sink_storage_gib: int = 20
    sink_storage_class: str = ""
    drain_margin_s: int = 30
    setup_backoff_limit: int = 10
    setup_ttl_s: int = 900
    gpu_per_pod: int = 1
    gpu_node_selector_key: str = "nvidia.com/gpu.present"
    gpu_node_selector_value: str = "true"
    gpu_toleration_key: str = "nvidia.com/gpu"
    gpu_runtime_class: str = ""
    gpu_video_codecs: bool = False
    engine_cache_gib: int = 4
    #: storage class of the GPU overlay's TensorRT engine cache claim (ReadWriteMany, shared by
    #: every inference pod so a scale-up loads engines instead of rebuilding them); empty: default.
    engine_cache_storage_class: str = ""

    def __post_init__(self) -> None:
        _check(
            bool(_DNS_LABEL.match(self.namespace)),
            "k8s.namespace",
            f"must be a DNS label, got {self.namespace!r}",
        )
        _check(
            bool(_DNS_LABEL.match(self.keda_namespace)),
            "k8s.keda_namespace",
            f"must be a DNS label, got {self.keda_namespace!r}",
        )
        for name in ("image", "gpu_image", "nats_image"):
            value = getattr(self, name)
            _check(bool(_IMAGE.match(value)), f"k8s.{name}", f"must be an image reference, got {value!r}")
        _check(
            self.image_pull_policy in ("Always", "IfNotPresent", "Never"),
            "k8s.image_pull_policy",
            f"must be Always, IfNotPresent or Never, got {self.image_pull_policy!r}",
        )
        _check(
            self.nats_replicas in (1, 3, 5),
            "k8s.nats_replicas",
            f"must be 1, 3 or 5 (a JetStream cluster needs a quorum), got {self.nats_replicas}",
        )
        _check(
            1 <= self.stream_replicas <= min(self.nats_replicas, 5),
            "k8s.stream_replicas",
            f"must be 1..nats_replicas ({self.nats_replicas}), got {self.stream_replicas}",
        )
        _check(
            bool(re.match(r"^[A-Za-z][A-Za-z0-9_]*$", self.nats_account)) and self.nats_account != "SYS",
            "k8s.nats_account",
            f"must be a NATS account name (letters, digits, '_'; not SYS), got {self.nats_account!r}",
        )
        _check(
            self.nats_monitoring_endpoint == ""
            or bool(re.match(r"^[A-Za-z0-9.-]+:[0-9]+$", self.nats_monitoring_endpoint)),
            "k8s.nats_monitoring_endpoint",
            f"must be host:port or empty, got {self.nats_monitoring_endpoint!r}",
        )
        for name in (
            "nats_storage_gib",
            "sink_storage_gib",
            "engine_cache_gib",
            "gpu_per_pod",
            "setup_ttl_s",
        ):
            value = getattr(self, name)
            _check(value >= 1, f"k8s.{name}", f"must be >= 1, got {value}")
        _check(self.drain_margin_s >= 5, "k8s.drain_margin_s", f"must be >= 5, got {self.drain_margin_s}")
        _check(
            self.setup_backoff_limit >= 0,
            "k8s.setup_backoff_limit",
            f"must be >= 0, got {self.setup_backoff_limit}",
        )
        _check(
            bool(_LABEL_KEY.match(self.gpu_node_selector_key)),
            "k8s.gpu_node_selector_key",
            f"must be a label key, got {self.gpu_node_selector_key!r}",
        )
        _check(
            bool(_LABEL_KEY.match(self.gpu_toleration_key)),
            "k8s.gpu_toleration_key",
            f"must be a taint key, got {self.gpu_toleration_key!r}",
        )


@dataclass(frozen=True)
class ClusterConfig:
    """Everything the manifests need beyond :class:`Settings`."""

    k8s: K8sSettings = field(default_factory=K8sSettings)
    resources: WorkloadResources = field(default_factory=WorkloadResources)
    scaling: StageScaling = field(default_factory=StageScaling)
    #: the ``[[cameras]]`` of the file: local runs start them, ``k8s render`` renders them.
    cameras: tuple[DeclaredCamera, ...] = ()
