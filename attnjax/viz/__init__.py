"""Visualisation of attention: heatmaps (terminal bars and HTML head view come later)."""

from attnjax.viz.heatmap import plot_attention, save_attention_grid

__all__ = ["plot_attention", "save_attention_grid"]
