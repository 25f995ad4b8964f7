"""Good-image calibration: thresholds and INT8 (installed as careg_edge.calibration)."""
