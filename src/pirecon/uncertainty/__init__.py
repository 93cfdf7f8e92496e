"""Calibrated uncertainty for reconstructions: intervals, their calibration with a guarantee, their metrics.

Lightning-free. :class:`Interval` is the typed per-pixel interval; :mod:`.bounds` the Hoeffding-Bentkus and
Waudby-Smith-Ramdas upper confidence bounds; :mod:`.calibration` risk-controlling prediction sets (RCPS) and
conformal risk control; :mod:`.metrics` miscoverage, width, risk by width quartile, Spearman, UCE, AUSE.
"""

from .bounds import hb_p_value, hb_upper_bound, minimum_calibration_size, wsr_upper_bound
from .calibration import (Calibration, check_disjoint, conformal_risk_control, group_splits, miscoverage_curves,
                          rcps, required_scale)
from .intervals import KINDS, Interval
from .metrics import ause, coverage, mean_width, miscoverage, risk_by_width_quartile, sparsification, spearman, uce

__all__ = ["Interval", "KINDS", "Calibration", "rcps", "conformal_risk_control", "miscoverage_curves",
           "required_scale", "check_disjoint", "group_splits", "hb_p_value", "hb_upper_bound", "wsr_upper_bound",
           "minimum_calibration_size", "miscoverage", "coverage", "mean_width", "risk_by_width_quartile",
           "spearman", "uce", "sparsification", "ause"]
