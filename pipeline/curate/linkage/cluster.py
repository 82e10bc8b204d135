"""Groups = connected components of the match graph (every rule match and every linked pair is an edge)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def components(edge_sets: list[tuple[str, np.ndarray]]) -> dict:
    """Connected components over the union of named edge arrays ((n, 2) report ids).

    Returns ``nodes`` (sorted report ids in a group), ``group`` (smallest report id of each node's component)
    and ``rule`` (the names of the edge sets inside each node's component, '+'-joined in the given order).
    Component labels do not depend on edge order, so a rerun gives identical groups.
    """
    edge_sets = [(name, e) for name, e in edge_sets if len(e)]
    if not edge_sets:
        return {"nodes": np.empty(0, np.int64), "group": np.empty(0, np.int64), "rule": []}
    edges = np.concatenate([e for _, e in edge_sets]).astype(np.int64)
    which = np.concatenate([np.full(len(e), i) for i, (_, e) in enumerate(edge_sets)])
    nodes, inv = np.unique(edges.ravel(), return_inverse=True)
    inv = inv.reshape(-1, 2)
    n = len(nodes)
    graph = coo_matrix((np.ones(len(inv)), (inv[:, 0], inv[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    root = np.full(comp.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(root, comp, nodes)
    masks = np.zeros(comp.max() + 1, dtype=np.int64)
    np.bitwise_or.at(masks, comp[inv[:, 0]], (1 << which).astype(np.int64))
    names = [name for name, _ in edge_sets]
    text = {m: "+".join(names[i] for i in range(len(names)) if m >> i & 1) for m in np.unique(masks)}
    return {"nodes": nodes, "group": root[comp], "rule": [text[m] for m in masks[comp]]}
