"""The control-plane load test (bench/control_plane.py), small: a burst of claims at once on the
API double (no containers) with 429s, 500s and cut watches, then the orchestrator SIGKILLed
mid-burst. Every claim binds, the API bucket's bound holds, nothing leaks after the TTL."""

from __future__ import annotations

from bench.control_plane import max_window, run


def test_max_window() -> None:
    assert max_window([0.0, 0.5, 0.99, 1.2, 1.6, 3.0]) == 3
    assert max_window([0.0, 0.1, 0.2, 1.05]) == 3
    assert max_window([]) == 0


def test_burst_of_claims_with_faults_and_a_sigkill() -> None:
    result = run(
        requests=150,
        pool=40,
        api_rate=80.0,
        api_burst=5,
        max_starting=64,
        error_rate=0.1,
        drop_watch_after=20,
        hold=0.2,
        kill_after=20,
        ttl=3,
        timeout=240,
    )
    burst, kill = result["burst"], result["kill"]
    assert burst["claimed"] == 150 and burst["errors"] == {}
    assert burst["injected"]["429"] > 0 and burst["injected"]["500"] > 0
    assert burst["watch_drops"] > 0
    # every request the double received went through the API limiter (no hidden resend), and
    # the double never saw more than the configured rate in any 1 s window
    assert burst["api_requests"] == burst["client_api_requests"]
    assert burst["api_requests_max_1s_window"] <= 80
    assert burst["leaks_after"]["claims"] == 0 and burst["leaks_after"]["bound_sandboxes"] == 0
    assert kill["claims_at_kill"] >= 20  # killed mid-burst, with claims outstanding
    assert kill["leaks_after_ttl"]["claims"] == 0
    assert kill["leaks_after_ttl"]["bound_sandboxes"] == 0 and kill["pods_left"] == 0
