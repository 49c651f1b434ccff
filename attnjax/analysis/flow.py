"""Attention rollout and attention flow (Abnar & Zuidema 2020, "Quantifying Attention Flow
in Transformers").

Both treat the layers as a graph: node ``(l, j)`` is token ``j`` at the input of layer
``l``, and layer ``l``'s (head-averaged) attention ``A_l`` connects ``(l + 1, i)`` to
``(l, j)`` with weight ``A_l[i, j]``. The residual connection is modelled as in the paper:
``A'_l = residual * I + (1 - residual) * A_l``, rows renormalised.

* **rollout**: ``A'_{L-1} @ ... @ A'_0``: the total weight of all paths (flow as if every
  path could carry its full product of weights);
* **flow**: for every output token ``i`` and input token ``j``, the maximum flow from
  ``(L, i)`` to ``(0, j)`` with the weights as edge capacities (a path carries no more than
  its narrowest edge).

``weights``: ``[L, T, T]`` head-averaged, or ``[L, H, T, T]`` (averaged here). Results are
``[T, T]``: row ``i`` is an output token, column ``j`` an input token.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def _layers(weights: np.ndarray, residual: float) -> np.ndarray:
    w = np.asarray(weights, np.float64)
    if w.ndim == 4:
        w = w.mean(axis=1)
    if w.ndim != 3 or w.shape[1] != w.shape[2]:
        raise ValueError(
            f"attention rollout/flow: `weights` must be self-attention [L, T, T] or "
            f"[L, H, T, T], got {list(np.shape(weights))}"
        )
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"attention rollout/flow: `residual` must be in [0, 1], got {residual}")
    eye = np.eye(w.shape[-1])
    mixed = residual * eye + (1.0 - residual) * w
    return mixed / np.maximum(mixed.sum(-1, keepdims=True), 1e-12)


def attention_rollout(weights: np.ndarray, *, residual: float = 0.5) -> np.ndarray:
    """``[T, T]``: ``A'_{L-1} ... A'_1 A'_0``. Identity attention rolls out to identity."""
    layers = _layers(weights, residual)
    out = np.eye(layers.shape[-1])
    for layer in layers:
        out = layer @ out
    return out


def _max_flow(capacity: np.ndarray, source: int, sink: int) -> float:
    """Edmonds-Karp on a dense capacity matrix (small graphs: (L + 1) * T nodes)."""
    residual = capacity.copy()
    total = 0.0
    n = residual.shape[0]
    while True:
        parent = np.full(n, -1)
        parent[source] = source
        queue = deque([source])
        while queue and parent[sink] < 0:
            u = queue.popleft()
            for v in np.nonzero((residual[u] > 1e-12) & (parent < 0))[0]:
                parent[v] = u
                queue.append(v)
        if parent[sink] < 0:
            return total
        bottleneck, v = np.inf, sink
        while v != source:
            bottleneck = min(bottleneck, residual[parent[v], v])
            v = parent[v]
        v = sink
        while v != source:
            residual[parent[v], v] -= bottleneck
            residual[v, parent[v]] += bottleneck
            v = parent[v]
        total += bottleneck


def attention_flow(weights: np.ndarray, *, residual: float = 0.5) -> np.ndarray:
    """``[T, T]``: max flow from each output token to each input token through the layers."""
    layers = _layers(weights, residual)
    num_layers, t, _ = layers.shape
    nodes = (num_layers + 1) * t
    capacity = np.zeros((nodes, nodes))
    for layer in range(num_layers):  # edges (layer + 1, i) -> (layer, j)
        upper, lower = (layer + 1) * t, layer * t
        capacity[upper : upper + t, lower : lower + t] = layers[layer]
    flow = np.zeros((t, t))
    for i in range(t):
        for j in range(t):
            flow[i, j] = _max_flow(capacity, num_layers * t + i, j)
    return flow
