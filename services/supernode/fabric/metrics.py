"""Per-link and per-plane Prometheus metrics of the fabric, read from the flow model at scrape time.

Per link (labels `link`, `plane`), only for links that have carried bytes or are faulted, so an idle
4,416-link supernode does not export 20,000 flat series:
    supernode_fabric_link_utilization_ratio       load / capacity now, 0..1
    supernode_fabric_link_bytes_total             bytes carried (counter)
    supernode_fabric_link_capacity_bytes_per_second  capacity now (degraded by faults)
    supernode_fabric_link_flows                   flows on the link now
    supernode_fabric_link_up                      1 up, 0 down
Per plane (label `plane`), every plane always:
    supernode_fabric_plane_bytes_total            bytes carried, summed over the plane's links (a transfer
                                                  counts once per link it crosses)
    supernode_fabric_plane_load_bytes_per_second  sum of the plane's link loads now
The per-plane mean link utilisation is `supernode_fabric_utilization_ratio` (runtime.metrics.FabricMetrics),
which `plane_utilization` feeds.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from supernode.core.flows import FlowNetwork
from supernode.core.topology import Plane, Topology


class LinkCollector(Collector):
    """Exports the flow model's link counters; register it on the fabric's metrics registry.

    A scrape runs on the metrics server's thread, so it reads the model without advancing it: the
    figures are as of the model's last settle (the fabric's maintenance task settles it at least
    once a second, and every transfer that starts or ends does too)."""

    def __init__(self, topology: Topology, flows: FlowNetwork) -> None:
        self.topology = topology
        self.flows = flows

    def collect(self) -> Iterator[Metric]:
        labels = ["link", "plane"]
        util = GaugeMetricFamily(
            "supernode_fabric_link_utilization_ratio", "Link load / capacity.", labels=labels
        )
        carried = CounterMetricFamily(
            "supernode_fabric_link_bytes", "Bytes carried by the link.", labels=labels
        )
        capacity = GaugeMetricFamily(
            "supernode_fabric_link_capacity_bytes_per_second", "Link capacity now (bytes/s).", labels=labels
        )
        flows = GaugeMetricFamily("supernode_fabric_link_flows", "Flows on the link now.", labels=labels)
        up = GaugeMetricFamily("supernode_fabric_link_up", "1 when the link is up.", labels=labels)
        plane_bytes = dict.fromkeys(Plane, 0.0)
        plane_load = dict.fromkeys(Plane, 0.0)
        for link_id, link in self.topology.links.items():
            stats = self.flows.link_stats(link_id)
            plane_bytes[link.plane] += stats.bytes_total
            plane_load[link.plane] += stats.load_bytes_per_s
            is_nominal = stats.capacity_bytes_per_s == link.capacity_bytes_per_s and not stats.is_down
            if stats.bytes_total == 0 and stats.num_flows == 0 and is_nominal:
                continue
            values = [link_id, link.plane.value]
            util.add_metric(values, stats.utilisation)
            carried.add_metric(values, stats.bytes_total)
            capacity.add_metric(values, stats.capacity_bytes_per_s)
            flows.add_metric(values, stats.num_flows)
            up.add_metric(values, 0.0 if stats.is_down else 1.0)
        yield from (util, carried, capacity, flows, up)
        yield _per_plane(
            CounterMetricFamily,
            "supernode_fabric_plane_bytes",
            "Bytes carried by the plane's links.",
            plane_bytes,
        )
        yield _per_plane(
            GaugeMetricFamily,
            "supernode_fabric_plane_load_bytes_per_second",
            "Sum of the plane's link loads.",
            plane_load,
        )


def _per_plane(
    family: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    doc: str,
    values: dict[Plane, float],
) -> Metric:
    metric = family(name, doc, labels=["plane"])
    for plane, value in values.items():
        metric.add_metric([plane.value], value)
    return metric


def plane_utilization(topology: Topology, flows: FlowNetwork) -> dict[str, float]:
    """Mean utilisation of each plane's links now (0..1; a down link counts as idle).

    Only links carrying flows have load, so only those are read: the fabric refreshes this every
    second, and reading all 4,416 links of a full supernode each time cost the host a busy core's
    worth of milliseconds that the workers' step loops need."""
    num_links = dict.fromkeys((plane.value for plane in Plane), 0)
    for link in topology.links.values():
        num_links[link.plane.value] += 1
    totals = dict.fromkeys(num_links, 0.0)
    for link_id in flows.busy_links():
        if not flows.is_down(link_id):
            totals[topology.links[link_id].plane.value] += flows.link_stats(link_id).utilisation
    return {plane: totals[plane] / n if n else 0.0 for plane, n in num_links.items()}
