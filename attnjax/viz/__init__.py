"""Visualisation: heatmaps (matplotlib PNG), terminal bars, and an interactive HTML head view."""

from attnjax.viz.bars import attention_bars
from attnjax.viz.head_view import head_view_html, save_head_view, screenshot
from attnjax.viz.heatmap import plot_attention, save_attention_grid, save_head_grid

__all__ = ["attention_bars", "head_view_html", "plot_attention", "save_attention_grid",
           "save_head_grid", "save_head_view", "screenshot"]
