"""What both layouts' probes bound alike: the health of the final features and the layer's stability.

:class:`HealthThresholds` holds those bounds; the image layout's
:class:`~evosearch.probes.screen.Thresholds` and the token layout's
:class:`~evosearch.probes.tokens.TokenThresholds` add the bounds of their own networks' metrics.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass
class HealthThresholds:
    """``max_<metric>`` rejects values above, ``min_<metric>`` values below, and NaN always (unless a
    NaN or Inf in the networks already explains it); ``.inf`` switches a bound off."""

    max_dead_fraction: float = 0.9  # final feature units constant across the batch
    min_output_scale: float = 0.01  # RMS of the final features: vanishing below
    max_output_scale: float = 100.0  # and exploding above
    max_stability: float = 10.0  # EvoNorm's worst-case gradient norm of the layer alone

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # NaN compares false: it would silently turn a bound off
            if math.isnan(getattr(self, f.name)):
                raise ValueError(f"threshold {f.name} must be a number, not NaN")
