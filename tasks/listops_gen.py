"""ListOps generator: the distribution of LRA's ``lra_benchmarks/data/listops.py`` (LRA_SPEC §1.1).

The reference draws trees one at a time, depth first, with Python's ``random``::

    node at depth d (root d = 1):
      d < max_depth and random() > 0.25  -> value, random.choice(range(10)), length 1
      d < max_depth and random() <= 0.25 -> operator: randint(2, max_args) children (drawn
                                            first), then random.choice(4 operators);
                                            length 2 + children's lengths
      d == max_depth                     -> value (no draw for the branch)

keeps a tree when ``min_length < length < max_length`` and drops duplicate trees. Every draw
is independent of the others, so the order in which they are made does not change the law
of a tree. Here a chunk of roots is grown level by level with numpy (breadth first), which
draws the same variables with the same probabilities:

- ``u <= 0.25`` on numpy's 53-bit uniform doubles, the reference's test on ``random()``
  (also 53 bits), so an operator has the very same probability 0.25 + 2**-53;
- ``Generator.integers`` is exactly uniform, like ``randint``/``choice``.

Speed without changing the law of a kept tree: a tree is abandoned as soon as a lower bound
of its length (nodes so far, 2 per operator, plus 1 per child still to grow) reaches
``max_length``, since length only grows; operators and values (which do not change a
length) are drawn, and text and label built, only for kept trees, with array operations
rather than per node in Python.

Determinism: chunk ``i`` draws from ``SeedSequence(seed, spawn_key=(i,))``; chunks are
concatenated in index order and de-duplicated keeping the first occurrence, so the rows
depend on ``(seed, params)`` only, never on the number of workers, and ``generate(n)`` is a
prefix of ``generate(m)`` for ``n < m``. Where the reference would loop forever (n above the
number of distinct trees the parameters allow), ``generate`` raises ``RuntimeError``.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable

import numpy as np

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VALUE_P = 0.25  # the reference's name: a node is a value when random() > VALUE_P
CHUNK_ROOTS = 4096  # root draws per chunk; fixed, so the rows do not depend on n or workers
STALL_CHUNKS = 200  # this many chunks in a row without a new row: give up instead of looping

# One byte per token while the text is assembled; operators are expanded at the end.
_OP_BYTES = "abcd"
_BYTE = np.frombuffer(("0123456789" + _OP_BYTES).encode(), dtype=np.uint8)  # by node code
_OPEN, _CLOSE, _END, _SEP = (ord(c) for c in "()]\n")


def max_tree_length(max_depth: int, max_args: int) -> int:
    """Length of the largest tree the process can draw (every node an operator with max_args)."""
    length = 1
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def _check(n: int, min_length: int, max_length: int, max_depth: int, max_args: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if max_depth < 2:
        raise ValueError(f"max_depth must be >= 2 (below that every tree is a bare value), got {max_depth}")
    if max_args < 2:
        raise ValueError(f"max_args must be >= 2, got {max_args}")
    top = max_tree_length(max_depth, max_args)
    if max_length - min_length < 2 or max_length <= 1 or min_length >= top:
        raise ValueError(
            f"no tree length lies strictly between min_length={min_length} and max_length={max_length} "
            f"(trees are 1..{top} long with max_depth={max_depth}, max_args={max_args})"
        )


def _segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start of each segment and the segment id of each element, for contiguous segments."""
    ends = np.cumsum(counts)
    return ends - counts, np.repeat(np.arange(len(counts)), counts)


def _grow(rng: np.random.Generator, roots: int, max_length: int, max_depth: int, max_args: int):
    """Grow the shapes of `roots` trees breadth first.

    Returns per-level arrays ``(nargs, tree)`` (nargs 0 for a value; tree the root index;
    nodes of a tree contiguous, children of a node contiguous and in order) and the length
    of every tree (>= max_length for abandoned ones, whose growth stopped early).
    """
    tree = np.arange(roots)  # (m,) tree id of each node of the current level
    length = np.ones(roots, dtype=np.int64)  # lower bound: every node counted once when created
    levels = []
    for depth in range(1, max_depth + 1):
        m = len(tree)
        if m == 0:
            break
        nargs = np.zeros(m, dtype=np.int64)
        if depth < max_depth:
            is_op = rng.random(m) <= VALUE_P
            nargs[is_op] = rng.integers(2, max_args + 1, int(is_op.sum()))
            # An operator adds its "]" (1) and one pending node per child.
            length += np.bincount(tree, weights=nargs + is_op, minlength=roots).astype(np.int64)
        levels.append((nargs, tree))
        grows = nargs > 0
        grows &= length[tree] < max_length  # drop children of trees already too long
        tree = np.repeat(tree[grows], nargs[grows])
    return levels, length


def _render(rng: np.random.Generator, levels, keep: np.ndarray) -> tuple[list[str], list[int]]:
    """Text and label of the trees flagged in `keep` (bool per root), in root order.

    Operators and values do not change a tree's length, so they are drawn here, for kept
    trees only (same law as drawing them for every node).
    """
    levels = [nargs[keep[tree]] for nargs, tree in levels]
    levels = [nargs for nargs in levels if len(nargs)]
    depth = len(levels)
    if depth == 0:
        return [], []
    codes = []  # per level: 0-9 a value, 10+i operator i
    for nargs in levels:
        is_op = nargs > 0
        code = np.empty(len(nargs), dtype=np.int64)
        code[is_op] = 10 + rng.integers(0, len(OPERATORS), int(is_op.sum()))
        code[~is_op] = rng.integers(0, 10, int((~is_op).sum()))
        codes.append(code)
    levels = list(zip(codes, levels))

    # Bottom-up: label and token count (with parentheses) of every node.
    value = [None] * depth
    tokens = [None] * depth
    for d in range(depth - 1, -1, -1):
        code, nargs = levels[d]
        val = code.copy()  # a value's label is itself
        tok = np.ones(len(code), dtype=np.int64)
        op = np.flatnonzero(nargs)
        if len(op):
            k = nargs[op]
            start, seg = _segments(k)
            child_val, child_tok = value[d + 1], tokens[d + 1]  # (sum k,), children in order
            srt = np.sort(seg * 16 + child_val) & 15  # values sorted within each node
            med = (srt[start + (k - 1) // 2] + srt[start + k // 2]) // 2  # int(np.median), args >= 0
            results = np.stack(
                [
                    np.minimum.reduceat(child_val, start),
                    np.maximum.reduceat(child_val, start),
                    med,
                    np.add.reduceat(child_val, start) % 10,
                ]
            )
            val[op] = results[code[op] - 10, np.arange(len(op))]
            # op(a1..ak) prints "(" * (k+1), OP, then "a_j )" per child, then "] )"
            tok[op] = 2 * k + 4 + np.add.reduceat(child_tok, start)
        value[d], tokens[d] = val, tok

    # Top-down: position of every node's first token; one separator slot after each tree.
    root_tok = tokens[0]
    pos = np.cumsum(root_tok + 1) - (root_tok + 1)
    buf = np.full(int((root_tok + 1).sum()), _OPEN, dtype=np.uint8)  # unset slots are "("
    buf[pos + root_tok] = _SEP
    for d in range(depth):
        code, nargs = levels[d]
        tok = tokens[d]
        is_val = nargs == 0
        buf[pos[is_val]] = _BYTE[code[is_val]]
        op = np.flatnonzero(nargs)
        if d > 0:
            buf[pos + tok] = _CLOSE  # every child is followed by the ")" closing its pair
        if len(op) == 0:
            break
        p, k = pos[op], nargs[op]
        buf[p + k + 1] = _BYTE[code[op]]
        end = p + tok[op]
        buf[end - 2] = _END
        buf[end - 1] = _CLOSE
        start, seg = _segments(k)
        step = tokens[d + 1] + 1  # a child and its ")"
        before = np.cumsum(step) - step
        pos = np.repeat(p + k + 2, k) + before - before[start][seg]

    spaced = np.full(2 * len(buf), ord(" "), dtype=np.uint8)
    spaced[::2] = buf
    text = spaced.tobytes().decode("ascii")
    for byte, name in zip(_OP_BYTES, OPERATORS):
        text = text.replace(byte, name)  # str.translate with a dict is ~30x slower
    texts = text.split(" \n ")[:-1]
    return texts, value[0].tolist()


def sample_chunk(
    seed: int, index: int, min_length: int, max_length: int, max_depth: int, max_args: int
) -> list[tuple[str, int]]:
    """Kept trees among the CHUNK_ROOTS roots of chunk `index` (duplicates not removed)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))
    levels, length = _grow(rng, CHUNK_ROOTS, max_length, max_depth, max_args)
    texts, labels = _render(rng, levels, (length > min_length) & (length < max_length))
    return list(zip(texts, labels))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def generate(
    n: int,
    seed: int,
    *,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[str, int]]:
    """`n` distinct ListOps rows ``(source_text, label)`` drawn as LRA's generator draws them.

    Deterministic for ``(seed, min_length, max_length, max_depth, max_args)`` whatever
    `workers` is (default: every usable core; 1 runs in this process). `progress` is called
    with the number of new rows each time some arrive.
    """
    _check(n, min_length, max_length, max_depth, max_args)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    params = (min_length, max_length, max_depth, max_args)
    rows: list[tuple[str, int]] = []
    seen: set[str] = set()
    stalled = 0

    def take(chunk: list[tuple[str, int]]) -> None:
        nonlocal stalled
        if len(rows) == n:  # the rest of a round once full
            return
        before = len(rows)
        for text, label in chunk:
            if len(rows) == n:
                break
            if text not in seen:
                seen.add(text)
                rows.append((text, label))
        stalled = 0 if len(rows) > before else stalled + 1
        if stalled == STALL_CHUNKS:
            # The reference would loop forever here (n above the number of distinct trees,
            # or a window the process almost never hits).
            raise RuntimeError(
                f"listops: no new row in {STALL_CHUNKS * CHUNK_ROOTS} draws after {len(rows)} of {n}; "
                f"too few distinct trees with {min_length} < length < {max_length}, "
                f"max_depth={max_depth}, max_args={max_args}"
            )
        if progress is not None and len(rows) > before:
            progress(len(rows) - before)

    workers = _cpu_count() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    chunks = itertools.count()
    if workers == 1 or n == 0:
        while len(rows) < n:
            take(sample_chunk(seed, next(chunks), *params))
        return rows
    with multiprocessing.get_context().Pool(workers) as pool:
        while len(rows) < n:
            # Rounds of 2 chunks per worker, each fully collected: leaving the pool with tasks
            # still in flight can deadlock Pool.terminate() on large pending results.
            batch = [(seed, next(chunks), *params) for _ in range(2 * workers)]
            for chunk in pool.starmap(sample_chunk, batch):
                take(chunk)
    return rows
