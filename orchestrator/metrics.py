"""Prometheus metrics of a run, served on a loopback port when asked (``--metrics-port``).

What an operator watches while thousands of trajectories run::

    agentic_sandboxes_live{backend}            gauge    admitted and not yet closed
    agentic_sandboxes_starting{backend}        gauge    starts in flight
    agentic_sandboxes_queued{backend}          gauge    waiting for admission
    agentic_sandbox_start_seconds{backend}     histogram admission granted -> agent answered
    agentic_sandbox_queue_wait_seconds{backend} histogram waiting for admission
    agentic_sandbox_start_failures_total{backend,kind}
    agentic_tool_call_seconds{tool,outcome}    histogram
    agentic_llm_call_seconds                   histogram one model call, retries included
    agentic_llm_retries_total{reason}          counter
    agentic_trajectories_total{status}         counter  outcomes
    agentic_errors_total{kind}                 counter  infrastructure errors by class
    agentic_sandboxes_reaped_total{backend}    counter  removed by gc / the agent-sandbox TTL

The gauges are read from :mod:`orchestrator.admission` at scrape time (nothing to keep in
sync). Recording is a no-op when ``prometheus_client`` (the ``metrics`` extra) is not
installed, so the hooks in the runner, the sandbox base class and the agents cost nothing
then. Nothing is created on import: the registry is built on first use.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from orchestrator.admission import controllers
from orchestrator.exceptions import ConfigError

log = logging.getLogger(__name__)

#: seconds: from a warm claim (tens of ms) to a cold pod start (a minute)
START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CALL_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """The collectors, in their own registry (never prometheus_client's global one)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.start_seconds = Histogram(
            "agentic_sandbox_start_seconds",
            "Sandbox start: admission granted until the in-sandbox agent answered",
            ["backend"],
            buckets=START_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "agentic_sandbox_queue_wait_seconds",
            "Time a sandbox start waited for admission (slots and creation rate)",
            ["backend"],
            buckets=START_BUCKETS,
            registry=r,
        )
        self.start_failures = Counter(
            "agentic_sandbox_start_failures",
            "Sandbox starts that failed, by exception class",
            ["backend", "kind"],
            registry=r,
        )
        self.tool_seconds = Histogram(
            "agentic_tool_call_seconds",
            "Tool call latency by tool and outcome (ok / failed)",
            ["tool", "outcome"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.llm_seconds = Histogram(
            "agentic_llm_call_seconds",
            "One model call, its retries included",
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.llm_retries = Counter(
            "agentic_llm_retries", "Retried model calls by error class", ["reason"], registry=r
        )
        self.trajectories = Counter(
            "agentic_trajectories", "Finished trajectories by status", ["status"], registry=r
        )
        self.errors = Counter(
            "agentic_errors", "Infrastructure errors by exception class", ["kind"], registry=r
        )
        self.reaped = Counter(
            "agentic_sandboxes_reaped",
            "Sandboxes removed by the reaper (gc) or expired by their TTL",
            ["backend"],
            registry=r,
        )
        r.register(_AdmissionCollector())


class _AdmissionCollector:
    """Gauges read from the admission controllers at scrape time."""

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        live = GaugeMetricFamily(
            "agentic_sandboxes_live", "Sandboxes admitted and not closed", labels=["backend"]
        )
        starting = GaugeMetricFamily(
            "agentic_sandboxes_starting", "Sandbox starts in flight", labels=["backend"]
        )
        queued = GaugeMetricFamily(
            "agentic_sandboxes_queued", "Sandbox starts waiting for admission", labels=["backend"]
        )
        for ctl in controllers():
            live.add_metric([ctl.backend], ctl.live)
            starting.add_metric([ctl.backend], ctl.starting)
            queued.add_metric([ctl.backend], ctl.queued)
        yield from (live, starting, queued)


_state: dict[str, Any] = {}
_lock = threading.Lock()


def get() -> Metrics | None:
    """The process's metrics; None when prometheus_client is not installed."""
    if "metrics" not in _state:
        with _lock:
            if "metrics" not in _state:
                try:
                    _state["metrics"] = Metrics()
                except ImportError:
                    _state["metrics"] = None
    found: Metrics | None = _state["metrics"]
    return found


def serve(port: int, host: str = "127.0.0.1") -> tuple[Any, int]:
    """Serve ``/metrics`` on ``host:port`` (0 picks a free port) in a daemon thread; returns
    (server, port). Call ``server.shutdown()`` to stop it."""
    if host not in ("127.0.0.1", "::1", "localhost"):
        # the metrics name images, tools and errors: not for the network by default
        log.warning("serving metrics on %s, not loopback", host)
    m = get()
    if m is None:
        raise ConfigError(
            "--metrics-port needs prometheus_client: pip install 'agentic-rollout[metrics]'"
        )
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, addr=host, registry=m.registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
    return server, int(server.server_address[1])


# ---- recording (each a no-op without prometheus_client)


def sandbox_started(backend: str, seconds: float, queue_wait: float) -> None:
    m = get()
    if m is not None:
        m.start_seconds.labels(backend).observe(seconds)
        m.queue_wait.labels(backend).observe(queue_wait)


def sandbox_start_failed(backend: str, exc: BaseException) -> None:
    m = get()
    if m is not None:
        m.start_failures.labels(backend, type(exc).__name__).inc()


def llm_call(seconds: float) -> None:
    m = get()
    if m is not None:
        m.llm_seconds.observe(seconds)


def sandboxes_reaped(backend: str, count: int) -> None:
    m = get()
    if m is not None and count:
        m.reaped.labels(backend).inc(count)


def trajectory_finished(trajectory: Any) -> None:
    """Outcome, errors, tool latencies and LLM retries of one finished trajectory (called
    before the steps may be dropped from the output)."""
    m = get()
    if m is None:
        return
    m.trajectories.labels(trajectory.status.value).inc()
    for error in trajectory.errors:
        m.errors.labels(error.type).inc()
    for retry in trajectory.retries:
        m.llm_retries.labels(retry.error.split(":", 1)[0]).inc()
    for step in trajectory.steps:
        if step.step_type.value == "tool_result" and step.duration is not None:
            outcome = "ok" if step.success else "failed"
            m.tool_seconds.labels(step.tool_name or "?", outcome).observe(step.duration)


__all__ = [
    "Metrics",
    "get",
    "llm_call",
    "sandbox_start_failed",
    "sandbox_started",
    "sandboxes_reaped",
    "serve",
    "trajectory_finished",
]
