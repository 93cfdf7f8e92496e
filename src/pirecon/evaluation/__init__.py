"""Evaluation on standardised test panels: the panels themselves (:mod:`.panels`: build, verify)."""

from .panels import PANELS, Condition, PanelError, build_panel, panel_conditions, read_manifest, verify_panel

__all__ = ["PANELS", "Condition", "PanelError", "build_panel", "panel_conditions", "read_manifest", "verify_panel"]
