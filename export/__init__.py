"""Export formats (installed as careg_edge.export)."""
