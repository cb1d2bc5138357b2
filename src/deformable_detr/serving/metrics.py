"""Counters and histograms of the server, written in the Prometheus text format (version 0.0.4).

metrics = ServerMetrics()
metrics.observe_request("/v1/detect", 200, 0.042)
text = metrics.render(batch_sizes={1: 3, 4: 2}, queue_depth=0, batches_formed=5)
"""

from __future__ import annotations

import bisect
import collections

# Seconds; the usual Prometheus client defaults plus the slow end a CPU detector reaches.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PREFIX = "deformable_detr"


class _Histogram:
    """Cumulative-bucket histogram of one label set."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += count
        self.sum += value * count

    def lines(self, name: str, labels: str) -> list[str]:
        out, cumulative = [], 0
        separator = "," if labels else ""
        for bound, count in zip([*map(_number, self.buckets), "+Inf"], self.counts):
            cumulative += count
            out.append(f'{name}_bucket{{{labels}{separator}le="{bound}"}} {cumulative}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {_number(self.sum)}")
        out.append(f"{name}_count{braces} {cumulative}")
        return out


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class ServerMetrics:
    """Requests by endpoint and status, request latency by endpoint; batch sizes come from the batcher."""

    def __init__(self):
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.latency: dict[str, _Histogram] = {}

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request; `endpoint` is the route's path (or "other" for unknown paths)."""
        self.requests[(endpoint, status)] += 1
        self.latency.setdefault(endpoint, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def render(self, batch_sizes: dict[int, int], queue_depth: int, batches_formed: int, max_batch: int) -> str:
        """The whole exposition text, ending in a newline."""
        lines = [
            f"# HELP {PREFIX}_requests_total Answered HTTP requests by endpoint and status code.",
            f"# TYPE {PREFIX}_requests_total counter",
        ]
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(f'{PREFIX}_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
        lines += [
            f"# HELP {PREFIX}_request_duration_seconds Time from request to response, by endpoint.",
            f"# TYPE {PREFIX}_request_duration_seconds histogram",
        ]
        for endpoint, histogram in sorted(self.latency.items()):
            lines += histogram.lines(f"{PREFIX}_request_duration_seconds", f'endpoint="{endpoint}"')
        sizes = _Histogram(tuple(float(b) for b in range(1, max_batch + 1)))
        for size, count in batch_sizes.items():
            sizes.observe(float(size), count)
        lines += [
            f"# HELP {PREFIX}_batch_size Images per model forward formed by dynamic batching.",
            f"# TYPE {PREFIX}_batch_size histogram",
        ]
        lines += sizes.lines(f"{PREFIX}_batch_size", "")
        lines += [
            f"# HELP {PREFIX}_batches_total Batches run by the model.",
            f"# TYPE {PREFIX}_batches_total counter",
            f"{PREFIX}_batches_total {batches_formed}",
            f"# HELP {PREFIX}_queue_depth Requests waiting for the model.",
            f"# TYPE {PREFIX}_queue_depth gauge",
            f"{PREFIX}_queue_depth {queue_depth}",
        ]
        return "\n".join(lines) + "\n"
