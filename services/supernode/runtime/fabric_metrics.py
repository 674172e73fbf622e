"""Prometheus metrics of the emulated fabric service (re-exported by `runtime.metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TRANSFER_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
                      1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)  # fmt: skip


class FabricMetrics:
    """The emulated fabric: transfers per plane and how busy each plane is (label `plane`).

    supernode_fabric_transfers_total, supernode_fabric_bytes_total (nominal bytes),
    supernode_fabric_transfer_seconds (histogram, emulated), supernode_fabric_utilization_ratio (gauge,
    mean busy fraction of the plane's links, 0..1), supernode_fabric_dies_leased (gauge).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._transfers = Counter("supernode_fabric_transfers", "Bulk transfers.", ("plane",), registry=r)
        self._bytes = Counter("supernode_fabric_bytes", "Nominal bytes moved.", ("plane",), registry=r)
        self._seconds = Histogram(
            "supernode_fabric_transfer_seconds", "Emulated transfer duration.", ("plane",), registry=r,
            buckets=TRANSFER_BUCKETS_S,
        )  # fmt: skip
        self._utilization = Gauge(
            "supernode_fabric_utilization_ratio",
            "Mean busy fraction of the plane's links.",
            ("plane",),
            registry=r,
        )
        self._dies = Gauge("supernode_fabric_dies_leased", "Dies leased to workers.", registry=r)

    def on_transfer(self, plane: str, num_bytes: int, duration_s: float) -> None:
        self._transfers.labels(plane).inc()
        self._bytes.labels(plane).inc(num_bytes)
        self._seconds.labels(plane).observe(duration_s)

    def set_utilization(self, plane: str, ratio: float) -> None:
        self._utilization.labels(plane).set(ratio)

    def set_dies_leased(self, num_dies: int) -> None:
        self._dies.set(num_dies)
