"""Prefix trie over the items' semantic IDs, as flat (CSR) arrays that live on device.

Why CSR and not a dense `[nodes, codes]` table: with the `item_token` scheme the last level has
about one code per item (12k on Beauty), so a dense boolean table would be
`nodes x 12k` (hundreds of MB). Here every node's children are stored contiguously, sorted by
code, and addressed by `child_start[node] : child_start[node + 1]`; memory is O(n_items x
sid_length). The decoder expands a node by gathering a fixed window of `max_children` edges
starting at `child_start[node]` and masking the slots past the node's child count, which is a
static-shape, jittable gather (see `gream_jax/infer/beam.py`).

Node 0 is the root. A node at depth `d` (the number of SID tokens read so far) has children at
level `d`. Leaves carry the item they spell (`node_item`, -1 for inner nodes). SIDs must be
prefix-free (no item's SID is a prefix of another's); both collision schemes guarantee that, and
`build_trie` refuses artifacts that break it, because such an item could never be told apart
from the longer one.

(level, code) edges become vocabulary token ids through `sid_token_table` of the model's
tokenizer (`[levels, max_codes]`, -1 = no token): `DeviceTrie.edge_token[e]` is the token whose
logit scores edge `e`, so constrained scores are read straight from full-vocabulary logits.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from gream_jax.utils import io


@dataclasses.dataclass(frozen=True)
class Trie:
    """Host (numpy) prefix trie. Shapes: nodes N, edges E = N - 1."""

    child_start: np.ndarray  # [N + 1] int32: children of node n are edges child_start[n]:child_start[n+1]
    edge_code: np.ndarray    # [E] int32: code of the edge (level = node_depth of its parent)
    edge_level: np.ndarray   # [E] int32: SID level of the edge
    edge_child: np.ndarray   # [E] int32: node the edge leads to
    node_depth: np.ndarray   # [N] int32
    node_item: np.ndarray    # [N] int32: item spelled by a leaf, -1 for inner nodes
    item_leaf: np.ndarray    # [n_items] int32: leaf node of each item

    @property
    def n_nodes(self) -> int:
        return int(self.node_depth.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_leaf.shape[0])

    @property
    def max_children(self) -> int:
        return int(np.max(np.diff(self.child_start))) if self.n_nodes else 0

    @property
    def max_depth(self) -> int:
        return int(self.node_depth.max()) if self.n_nodes else 0

    def children(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """(codes, child nodes) of `node`, sorted by code."""
        lo, hi = self.child_start[node], self.child_start[node + 1]
        return self.edge_code[lo:hi], self.edge_child[lo:hi]

    def walk(self, codes) -> int:
        """Node reached by reading `codes` from the root, or -1 if that prefix names no item."""
        node = 0
        for c in codes:
            kids_codes, kids = self.children(node)
            j = np.searchsorted(kids_codes, c)
            if j >= len(kids_codes) or kids_codes[j] != c:
                return -1
            node = int(kids[j])
        return node

    def save(self, path: str) -> None:
        io.save_npz(path, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def load(cls, path: str) -> "Trie":
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: trie not found (has the index stage run?)")
        with np.load(path) as z:
            missing = [f.name for f in dataclasses.fields(cls) if f.name not in z]
            if missing:
                raise ValueError(f"{path}: not a trie file, missing arrays {missing}")
            return cls(**{f.name: z[f.name].astype(np.int32) for f in dataclasses.fields(cls)})

    def to_device(self, sid_token_table: np.ndarray, sharding=None, renormalise: bool = False) -> "DeviceTrie":
        """Maps every edge to its vocabulary token and places the arrays (replicated by default).

        renormalise: the model's SID distribution is trie-factored (`config.model.sid_softmax=
        "trie"`, see `gream_jax.model.trie_softmax`): decoders score each SID token against its
        siblings only, instead of against the whole vocabulary."""
        table = np.asarray(sid_token_table)
        if table.ndim != 2:
            raise ValueError(f"sid_token_table: expected [levels, max_codes], got shape {table.shape}")
        if self.edge_level.size and (self.edge_level.max() >= table.shape[0]
                                     or self.edge_code.max() >= table.shape[1]):
            raise ValueError(
                f"sid_token_table has shape {table.shape} but the trie uses level "
                f"{self.edge_level.max()} / code {self.edge_code.max()}: tokenizer and SIDs do not match")
        edge_token = table[self.edge_level, self.edge_code].astype(np.int32)
        if (edge_token < 0).any():
            bad = int(np.argmax(edge_token < 0))
            raise ValueError(f"sid_token_table has no token for level {self.edge_level[bad]} code "
                             f"{self.edge_code[bad]}: tokenizer and SIDs do not match")
        put = (lambda a: jax.device_put(a, sharding)) if sharding is not None else jnp.asarray
        return DeviceTrie(child_start=put(self.child_start), edge_token=put(edge_token),
                          edge_child=put(self.edge_child), node_item=put(self.node_item),
                          max_children=max(self.max_children, 1), max_depth=self.max_depth,
                          renormalise=bool(renormalise))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DeviceTrie:
    """The arrays the decoder needs, on device; a pytree whose sizes are static metadata."""

    child_start: jax.Array  # [N + 1] int32
    edge_token: jax.Array   # [E] int32 vocabulary id of each edge
    edge_child: jax.Array   # [E] int32
    node_item: jax.Array    # [N] int32
    max_children: int = dataclasses.field(metadata=dict(static=True))
    max_depth: int = dataclasses.field(metadata=dict(static=True))
    # True when the model was trained with the trie-factored softmax (config.model.sid_softmax =
    # "trie"): each SID token's log-probability is normalised over its trie siblings.
    renormalise: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def expand(self, nodes: jax.Array):
        """Children windows of `nodes` (any shape S).

        Returns (token [S, W], child [S, W], valid [S, W]) with W = max_children; slots past a
        node's child count are invalid (their token/child are clamped copies, never to be used).
        """
        width = self.max_children
        start = self.child_start[nodes]
        count = self.child_start[nodes + 1] - start
        slot = jnp.arange(width, dtype=jnp.int32)
        edge = jnp.clip(start[..., None] + slot, 0, max(self.edge_token.shape[0] - 1, 0))
        valid = slot < count[..., None]
        return self.edge_token[edge], self.edge_child[edge], valid


def build_trie(semantic_ids) -> Trie:
    """Builds the trie from a `SemanticIds` (`codes [n_items, max_len]` -1 padded, `lengths`)."""
    codes = np.asarray(semantic_ids.codes)
    lengths = np.asarray(semantic_ids.lengths)
    return build_trie_from_codes(codes, lengths)


def build_trie_from_codes(codes: np.ndarray, lengths: np.ndarray) -> Trie:
    """Same as `build_trie` from raw arrays: `codes [n_items, max_len]` (-1 padded), `lengths [n_items]`."""
    codes = np.asarray(codes, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if codes.ndim != 2 or lengths.shape != (codes.shape[0],):
        raise ValueError(f"SIDs: codes {codes.shape} and lengths {lengths.shape} do not match")
    n_items, max_len = codes.shape
    if n_items == 0:
        raise ValueError("SIDs: no items")
    if lengths.min() < 1 or lengths.max() > max_len:
        raise ValueError(f"SIDs: lengths must be in [1, {max_len}], got [{lengths.min()}, {lengths.max()}]")
    inside = np.arange(max_len)[None, :] < lengths[:, None]
    if (codes[inside] < 0).any():
        bad = int(np.argwhere((codes < 0) & inside)[0, 0])
        raise ValueError(f"SIDs: item {bad} has a negative code inside its length {lengths[bad]}")

    # Insert items level by level; children are keyed by (parent node, code).
    children: list[dict[int, int]] = [{}]
    depth = [0]
    item_leaf = np.empty(n_items, dtype=np.int32)
    for item in range(n_items):
        node = 0
        for d in range(int(lengths[item])):
            c = int(codes[item, d])
            nxt = children[node].get(c)
            if nxt is None:
                nxt = len(children)
                children[node][c] = nxt
                children.append({})
                depth.append(d + 1)
            node = nxt
        item_leaf[item] = node

    node_item = np.full(len(children), -1, dtype=np.int32)
    for item, leaf in enumerate(item_leaf):
        if node_item[leaf] >= 0:
            raise ValueError(f"SIDs: items {node_item[leaf]} and {item} have the same SID "
                             f"{codes[item, :lengths[item]].tolist()} (collisions must be resolved)")
        if children[leaf]:
            raise ValueError(f"SIDs: item {item}'s SID {codes[item, :lengths[item]].tolist()} is a "
                             "prefix of another item's SID; SIDs must be prefix-free")
        node_item[leaf] = item

    # CSR layout, children sorted by code.
    counts = np.array([len(ch) for ch in children], dtype=np.int64)
    child_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    n_edges = int(child_start[-1])
    edge_code = np.empty(n_edges, dtype=np.int32)
    edge_child = np.empty(n_edges, dtype=np.int32)
    edge_level = np.empty(n_edges, dtype=np.int32)
    for node, ch in enumerate(children):
        lo = child_start[node]
        for j, c in enumerate(sorted(ch)):
            edge_code[lo + j] = c
            edge_child[lo + j] = ch[c]
            edge_level[lo + j] = depth[node]
    return Trie(child_start=child_start, edge_code=edge_code, edge_level=edge_level,
                edge_child=edge_child, node_depth=np.asarray(depth, dtype=np.int32),
                node_item=node_item, item_leaf=item_leaf)
