"""Streaming anomaly scores for telemetry: a robust z-score per (device, metric).

For each series the model keeps the last ``window`` values (120 by default). A new value
is scored against those earlier values:

    score = |value - median| / scale,  scale = max(1.4826 * MAD, floor)

where MAD is the median absolute deviation from the median (1.4826 * MAD estimates the
standard deviation of normal data, and a few outliers barely move it). When more than
half of the window is one value the MAD is 0: the scale then falls back to
1.2533 * (mean absolute deviation), which still sees the rarer values. The floor,
max(mad_floor_rel * |median|, mad_floor_abs), keeps a perfectly flat series from dividing
by zero and keeps a tiny wiggle on a flat series from counting as an anomaly.

The value is an anomaly when score > threshold and at least ``min_points`` earlier values
were in the window. Every value, anomalous or not, then enters the window: a lasting level
shift is flagged until it fills about half the window, and then it is the new normal.

Memory is bounded: at most ``max_series`` series are kept, the least recently used is
dropped first (it starts again from nothing if it comes back).
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

MODEL_NAME: Final = "anomaly.robust_z"

# 1 / Phi^-1(3/4): makes the MAD a consistent estimator of a normal distribution's sigma.
MAD_TO_SIGMA: Final = 1.4826
# sqrt(pi / 2): the same for the mean absolute deviation.
MEAN_AD_TO_SIGMA: Final = 1.2533

# Values are limited to this magnitude so that differences between two of them (and the
# scores) stay finite floats.
MAX_ABS_VALUE: Final = 1e300


@dataclass(frozen=True)
class AnomalyConfig:
    window: int = 120
    threshold: float = 6.0
    min_points: int = 8
    max_series: int = 100_000
    # The scale is never below max(mad_floor_rel * |median|, mad_floor_abs).
    mad_floor_rel: float = 0.01
    mad_floor_abs: float = 1e-6

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be at least 1")
        if self.max_series < 1:
            raise ValueError("max_series must be at least 1")
        if self.min_points < 0:
            raise ValueError("min_points must not be negative")
        if not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise ValueError("threshold must be a positive number")
        if not (self.mad_floor_abs > 0 and self.mad_floor_rel >= 0):
            raise ValueError("mad_floor_abs must be positive and mad_floor_rel not negative")


@dataclass(frozen=True)
class AnomalyScore:
    score: float
    is_anomaly: bool
    # The median of the earlier values; None when there were none.
    baseline: float | None
    # How many earlier values the score was computed from (0 up to the window).
    points: int


class _Series:
    """A ring buffer of the last ``window`` values, as C doubles (8 bytes a value)."""

    __slots__ = ("values", "next")

    def __init__(self) -> None:
        self.values = array("d")
        self.next = 0

    def add(self, value: float, window: int) -> None:
        if len(self.values) < window:
            self.values.append(value)
        else:
            self.values[self.next] = value
            self.next = (self.next + 1) % window


def _median_of_sorted(values: list[float]) -> float:
    n = len(values)
    mid = n // 2
    if n % 2:
        return values[mid]
    # Halves first: a + b could overflow where a/2 + b/2 can't.
    return values[mid - 1] / 2 + values[mid] / 2


def robust_z(history: list[float], value: float, config: AnomalyConfig) -> tuple[float, float | None]:
    """(score, baseline) of ``value`` against ``history``; (0.0, None) for no history."""
    if not history:
        return 0.0, None
    ordered = sorted(history)
    median = _median_of_sorted(ordered)
    deviations = sorted(abs(x - median) for x in ordered)
    scale = MAD_TO_SIGMA * _median_of_sorted(deviations)
    if scale == 0.0:
        scale = MEAN_AD_TO_SIGMA * math.fsum(deviations) / len(deviations)
    scale = max(scale, config.mad_floor_rel * abs(median), config.mad_floor_abs)
    # Finite with the default floor and |value| <= MAX_ABS_VALUE; clamped for any other.
    return min(abs(value - median) / scale, sys.float_info.max), median


class RobustZScore:
    """The per-(device_id, metric) streaming model behind the ``anomaly.score`` op."""

    name: Final = MODEL_NAME

    def __init__(self, config: AnomalyConfig | None = None) -> None:
        self.config = config or AnomalyConfig()
        self._series: OrderedDict[tuple[str, str], _Series] = OrderedDict()

    def __len__(self) -> int:
        """How many series are kept."""
        return len(self._series)

    def score(self, device_id: str, metric: str, value: float) -> AnomalyScore:
        if not math.isfinite(value) or abs(value) > MAX_ABS_VALUE:
            raise ValueError("value must be a finite number of magnitude at most 1e300")
        key = (device_id, metric)
        series = self._series.get(key)
        if series is None:
            series = _Series()
            self._series[key] = series
            while len(self._series) > self.config.max_series:
                self._series.popitem(last=False)
        else:
            self._series.move_to_end(key)
        history = series.values.tolist()
        score, baseline = robust_z(history, value, self.config)
        points = len(history)
        series.add(value, self.config.window)
        return AnomalyScore(
            score=score,
            is_anomaly=points >= self.config.min_points and score > self.config.threshold,
            baseline=baseline,
            points=points,
        )
