"""Experiments that train several models and write a report: `convergence` (DETR vs Deformable DETR variants)."""
