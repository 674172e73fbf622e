from __future__ import annotations

import statistics

import pytest

from supernode.loadgen.arrivals import constant_arrivals, make_arrivals, poisson_arrivals


def _gaps(offsets: list[float]) -> list[float]:
    return [b - a for a, b in zip(offsets, offsets[1:], strict=False)]


def test_poisson_is_repeatable_and_has_the_asked_rate() -> None:
    a = poisson_arrivals(4000, 10.0, seed=7)
    assert a == poisson_arrivals(4000, 10.0, seed=7)
    assert a != poisson_arrivals(4000, 10.0, seed=8)
    assert a[0] == 0.0 and a == sorted(a)
    gaps = _gaps(a)
    assert statistics.fmean(gaps) == pytest.approx(0.1, rel=0.05)
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, rel=0.1)  # exponential: CV 1


def test_burstiness_changes_variability_not_rate() -> None:
    bursty = _gaps(poisson_arrivals(4000, 10.0, seed=1, burstiness=0.25))
    smooth = _gaps(poisson_arrivals(4000, 10.0, seed=1, burstiness=4.0))
    for gaps, cv in ((bursty, 2.0), (smooth, 0.5)):  # gamma shape k: CV = 1/sqrt(k)
        assert statistics.fmean(gaps) == pytest.approx(0.1, rel=0.1)
        assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(cv, rel=0.15)


def test_constant_and_closed() -> None:
    assert constant_arrivals(4, 2.0) == [0.0, 0.5, 1.0, 1.5]
    assert make_arrivals("closed", 3, None, seed=0) == [0.0, 0.0, 0.0]
    assert make_arrivals("constant", 2, 4.0, seed=0) == [0.0, 0.25]


@pytest.mark.parametrize(
    ("kind", "rate", "match"),
    [("poisson", None, "needs a request rate"), ("poisson", 0.0, "> 0"), ("zipf", 1.0, "unknown arrival")],
)
def test_bad_arrivals_are_named(kind: str, rate: float | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_arrivals(kind, 3, rate, seed=0)
