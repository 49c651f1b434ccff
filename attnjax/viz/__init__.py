"""Visualisation of attention: heatmaps, terminal bars (the HTML head view comes later)."""

from attnjax.viz.bars import attention_bars
from attnjax.viz.heatmap import plot_attention, save_attention_grid

__all__ = ["attention_bars", "plot_attention", "save_attention_grid"]
