"""The robust z-score model, on its own."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from unhidra_ml.anomaly import AnomalyConfig, RobustZScore, robust_z


def feed(model: RobustZScore, values: list[float], device: str = "d", metric: str = "m") -> None:
    for v in values:
        model.score(device, metric, v)


def test_the_first_point_has_no_baseline() -> None:
    result = RobustZScore().score("d", "m", 42.0)
    assert result.score == 0.0
    assert result.baseline is None
    assert result.points == 0
    assert not result.is_anomaly


def test_points_count_the_earlier_values_up_to_the_window() -> None:
    model = RobustZScore()
    for i in range(200):
        assert model.score("d", "m", float(i % 3)).points == min(i, 120)


def test_baseline_is_the_median_of_the_earlier_values() -> None:
    model = RobustZScore()
    feed(model, [1.0, 2.0, 3.0, 100.0])
    assert model.score("d", "m", 5.0).baseline == 2.5


def test_a_spike_in_noisy_data_is_an_anomaly() -> None:
    rng = random.Random(7)
    model = RobustZScore()
    feed(model, [20.0 + rng.gauss(0, 0.5) for _ in range(100)])
    normal = model.score("d", "m", 20.4)
    assert not normal.is_anomaly
    assert normal.score < 2
    spike = model.score("d", "m", 35.0)
    assert spike.is_anomaly
    assert spike.score > 6
    assert spike.baseline is not None and abs(spike.baseline - 20.0) < 0.3
    dip = model.score("d", "m", 5.0)
    assert dip.is_anomaly


def test_nothing_is_an_anomaly_before_min_points() -> None:
    model = RobustZScore()
    feed(model, [10.0, 10.1, 9.9, 10.0, 10.2, 9.8, 10.0])  # 7 points
    early = model.score("d", "m", 1000.0)
    assert early.points == 7
    assert early.score > 6
    assert not early.is_anomaly
    # With 8 earlier points (the 1000 among them: a robust median doesn't care), it is.
    assert model.score("d", "m", 2000.0).is_anomaly


def test_min_points_and_threshold_are_configurable() -> None:
    model = RobustZScore(AnomalyConfig(min_points=2, threshold=3.0))
    feed(model, [10.0, 10.5])
    result = model.score("d", "m", 12.0)
    assert 3 < result.score < 6
    assert result.is_anomaly


def test_a_flat_series_does_not_divide_by_zero_and_ignores_a_tiny_wiggle() -> None:
    model = RobustZScore()
    feed(model, [21.5] * 50)
    wiggle = model.score("d", "m", 21.52)
    assert math.isfinite(wiggle.score)
    assert not wiggle.is_anomaly
    # The floor is 1% of the median: 6% away is still not enough on a flat series...
    assert not model.score("d", "m", 21.5 * 1.05).is_anomaly
    # ... and a real jump is.
    assert model.score("d", "m", 30.0).is_anomaly


def test_a_flat_zero_series_flags_any_real_change() -> None:
    model = RobustZScore()
    feed(model, [0.0] * 20)
    assert not model.score("d", "m", 1e-7).is_anomaly
    assert model.score("d", "m", 1.0).is_anomaly


def test_a_mostly_flat_series_uses_the_mean_deviation() -> None:
    # 0 most of the time, bursts of 5 now and then: MAD is 0, but a burst is normal.
    model = RobustZScore()
    feed(model, ([0.0] * 3 + [5.0]) * 20)
    assert model.score("d", "m", 5.0).score < 6
    assert model.score("d", "m", 500.0).is_anomaly


def test_a_level_shift_becomes_the_new_normal() -> None:
    rng = random.Random(3)
    model = RobustZScore()
    feed(model, [10.0 + rng.gauss(0, 0.2) for _ in range(120)])
    flags = [model.score("d", "m", 50.0 + rng.gauss(0, 0.2)).is_anomaly for _ in range(120)]
    assert flags[0]
    # Once the new level fills half the window, it is the baseline.
    assert not any(flags[70:])


def test_series_are_independent() -> None:
    model = RobustZScore()
    feed(model, [1.0, 1.1, 0.9] * 10, device="a", metric="temp")
    feed(model, [1000.0, 1010.0, 990.0] * 10, device="a", metric="pressure")
    feed(model, [1000.0, 1010.0, 990.0] * 10, device="b", metric="temp")
    assert model.score("a", "temp", 1000.0).is_anomaly
    assert not model.score("a", "pressure", 1000.0).is_anomaly
    assert not model.score("b", "temp", 1000.0).is_anomaly
    assert len(model) == 3


def test_the_least_recently_used_series_is_dropped_at_the_cap() -> None:
    model = RobustZScore(AnomalyConfig(max_series=3))
    for device in ("a", "b", "c"):
        feed(model, [1.0] * 5, device=device)
    model.score("a", "m", 1.0)  # a is now the most recent; b the least
    model.score("d", "m", 1.0)
    assert len(model) == 3
    assert model.score("a", "m", 1.0).points == 6
    assert model.score("b", "m", 1.0).points == 0  # dropped, starts again
    assert len(model) == 3


def test_the_default_caps() -> None:
    config = AnomalyConfig()
    assert (config.window, config.threshold, config.min_points, config.max_series) == (120, 6.0, 8, 100_000)


def test_extreme_values_stay_finite() -> None:
    model = RobustZScore()
    feed(model, [1e300, -1e300] * 5)
    result = model.score("d", "m", 1e300)
    assert math.isfinite(result.score)
    assert result.baseline is not None and math.isfinite(result.baseline)
    assert robust_z([-1e300], 1e300, AnomalyConfig())[0] < math.inf


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e301])
def test_non_finite_or_huge_values_are_refused(value: float) -> None:
    model = RobustZScore()
    with pytest.raises(ValueError):
        model.score("d", "m", value)
    assert len(model) == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: AnomalyConfig(window=0),
        lambda: AnomalyConfig(max_series=0),
        lambda: AnomalyConfig(min_points=-1),
        lambda: AnomalyConfig(threshold=0.0),
        lambda: AnomalyConfig(threshold=math.inf),
        lambda: AnomalyConfig(mad_floor_abs=0.0),
    ],
)
def test_bad_configs_are_refused(make: Callable[[], AnomalyConfig]) -> None:
    with pytest.raises(ValueError):
        make()
