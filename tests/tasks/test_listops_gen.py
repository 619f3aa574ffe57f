"""ListOps generator against LRA_SPEC §1.1, checked with parsers and samplers written here.

Nothing below reuses the generator's code: rows are parsed back from their text (both the
pair form and LRA's tokenised form), evaluated with plain Python, and the distribution is
compared with a depth-first sampler that follows the reference's description literally.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter

import pytest

from tasks.listops_gen import generate

OPS = ("[MIN", "[MAX", "[MED", "[SM")
DIGITS = tuple(str(v) for v in range(10))
SMALL = dict(min_length=20, max_length=100)  # most checks: short rows, same process


def apply(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        return int(statistics.median(args))  # float mean of the middle pair, truncated
    if op == "[SM":
        return sum(args) % 10
    raise AssertionError(f"unknown operator {op!r}")


def parse_pairs(text: str):
    """The pair form: every pair is '( x y )'; atoms are operators, digits and ']'."""
    tokens = text.split(" ")  # single spaces only: a double space gives an empty token
    stack: list[list] = [[]]
    for tok in tokens:
        if tok == "(":
            stack.append([])
        elif tok == ")":
            items = stack.pop()
            assert len(items) == 2, f"a pair holds {len(items)} items"
            stack[-1].append(tuple(items))
        else:
            assert tok in OPS or tok in DIGITS or tok == "]", f"bad token {tok!r}"
            stack[-1].append(int(tok) if tok in DIGITS else tok)
    assert len(stack) == 1 and len(stack[0]) == 1, "unbalanced text"
    return stack[0][0]


def unpair(t):
    """Left-nested pairs ((((op, a1), a2), ..., an), ']') -> (op, [a1..an]) or a digit."""
    if isinstance(t, int):
        return t
    assert isinstance(t, tuple) and t[1] == "]", "an operator node must close with ']'"
    args = []
    spine = t[0]
    while isinstance(spine, tuple):
        args.append(unpair(spine[1]))
        spine = spine[0]
    assert spine in OPS, f"a spine must start with an operator, got {spine!r}"
    return (spine, args[::-1])


def print_pairs(node) -> str:
    """Print a tree the way the spec describes, independently of how it was parsed."""
    if isinstance(node, int):
        return str(node)
    op, args = node
    pair: object = op  # pairs are lists here, so they cannot be mistaken for nodes
    for a in args:
        pair = [pair, a]
    pair = [pair, "]"]

    def show(p) -> str:
        if isinstance(p, list):
            return f"( {show(p[0])} {show(p[1])} )"
        return p if isinstance(p, str) else print_pairs(p)

    return show(pair)


def eval_tree(node) -> int:
    if isinstance(node, int):
        return node
    op, args = node
    return apply(op, [eval_tree(a) for a in args])


def eval_lra_tokens(text: str) -> dict:
    """LRA's tokenised form (no parentheses, ']' -> 'X'), read as a prefix expression."""
    tokens = text.replace("(", "").replace(")", "").replace("]", "X").split()
    stack: list[tuple[str, list[int]]] = []
    out = dict(ops=Counter(), nargs=Counter(), values=Counter(), max_depth=0)
    value_at = Counter()  # depth -> value nodes; op_at: depth -> operator nodes
    op_at = Counter()
    result = None
    for i, tok in enumerate(tokens):
        depth = len(stack) + 1
        if tok in OPS:
            assert i == 0 or stack, "a second tree after the root"
            stack.append((tok, []))
            out["ops"][tok] += 1
            op_at[depth] += 1
        elif tok in DIGITS:
            assert stack, "a bare value outside any operator"
            stack[-1][1].append(int(tok))
            out["values"][int(tok)] += 1
            value_at[depth] += 1
            out["max_depth"] = max(out["max_depth"], depth)  # the deepest node is a value
        else:
            assert tok == "X", f"bad token {tok!r}"
            op, args = stack.pop()
            out["nargs"][len(args)] += 1
            v = apply(op, args)
            if stack:
                stack[-1][1].append(v)
            else:
                assert i == len(tokens) - 1, "tokens after the root closed"
                result = v
    assert result is not None, "root never closed"
    # 1 per value, 2 per operator (its token and its X)
    length = sum(out["values"].values()) + 2 * sum(out["ops"].values())
    out.update(label=result, length=length, value_at=value_at, op_at=op_at)
    return out


def check_row(
    text: str, label: int, *, min_length: int, max_length: int, max_depth: int = 10, max_args: int = 10
):
    tree = unpair(parse_pairs(text))
    assert print_pairs(tree) == text  # exactly the left-nested pair form, single spaces
    assert isinstance(tree, tuple), "the root must be an operator"
    info = eval_lra_tokens(text)
    assert type(label) is int and label == eval_tree(tree) == info["label"]
    assert min_length < info["length"] < max_length
    assert info["max_depth"] <= max_depth  # depth of the deepest value, root = 1
    assert set(info["nargs"]) <= set(range(2, max_args + 1))
    return info


def test_format_of_a_tiny_tree():
    # MAX(2, 9) per the spec; our parser/printer must agree with it before judging rows
    text = "( ( ( [MAX 2 ) 9 ) ] )"
    assert unpair(parse_pairs(text)) == ("[MAX", [2, 9])
    assert print_pairs(("[MAX", [2, 9])) == text
    assert eval_lra_tokens(text)["length"] == 4
    assert apply("[MED", [3, 4]) == 3 and apply("[MED", [1, 9, 4]) == 4 and apply("[SM", [7, 8]) == 5


def test_small_rows_are_exact():
    rows = generate(400, 1, **SMALL, workers=1)
    assert len(rows) == 400 and len({t for t, _ in rows}) == 400
    depth_seen, args_seen = set(), Counter()
    for text, label in rows:
        info = check_row(text, label, **SMALL)
        depth_seen.add(info["max_depth"])
        args_seen.update(info["nargs"])
    assert set(args_seen) == set(range(2, 11))  # both ends of randint(2, 10) occur
    assert max(depth_seen) >= 6


def test_default_rows_are_exact():
    rows = generate(40, 7, workers=1)
    assert len(rows) == 40
    for text, label in rows:
        check_row(text, label, min_length=500, max_length=2000)


def test_bounds_bind():
    # tight limits: every bound is reached and never crossed
    params = dict(min_length=4, max_length=24, max_depth=3, max_args=4)  # trees are 4..26 long
    depths, args = Counter(), Counter()
    for text, label in generate(300, 2, **params, workers=1):
        info = check_row(text, label, **params)
        depths[info["max_depth"]] += 1
        args.update(info["nargs"])
        assert info["op_at"][3] == 0  # at max_depth a node is always a value
    assert depths.keys() == {2, 3}
    assert args.keys() == {2, 3, 4}


def test_length_window_is_strict():
    lengths = Counter()
    for text, label in generate(300, 3, min_length=20, max_length=23, workers=1):
        lengths[check_row(text, label, min_length=20, max_length=23)["length"]] += 1
    assert lengths.keys() == {21, 22}


def test_duplicates_dropped_over_a_small_tree_space():
    # max_depth=2, max_args=2: only 4 * 10 * 10 = 400 distinct trees op(a, b), so 300 draws
    # would repeat some (birthday) if duplicates were kept; asking for <= 400 cannot hang
    params = dict(min_length=3, max_length=5, max_depth=2, max_args=2)
    rows = generate(300, 4, **params, workers=1)
    texts = [t for t, _ in rows]
    assert len(texts) == 300 == len(set(texts))
    every = {print_pairs((op, [a, b])) for op in OPS for a in range(10) for b in range(10)}
    assert set(texts) <= every
    trees = [unpair(parse_pairs(t)) for t in texts]
    assert {op for op, _ in trees} == set(OPS)
    assert {v for _, args in trees for v in args} == set(range(10))
    for text, label in rows:
        check_row(text, label, **params)


def test_exhausted_tree_space_fails_instead_of_looping():
    with pytest.raises(RuntimeError, match="no new row"):
        generate(401, 4, min_length=3, max_length=5, max_depth=2, max_args=2, workers=1)


def test_deterministic_prefix_stable_and_worker_independent():
    a = generate(600, 11, **SMALL, workers=1)  # about 6 chunks
    assert generate(600, 11, **SMALL, workers=1) == a
    assert generate(600, 11, **SMALL, workers=2) == a
    assert generate(250, 11, **SMALL, workers=2) == a[:250]
    assert generate(600, 12, **SMALL, workers=1) != a


def test_progress_counts_every_row():
    calls = []
    rows = generate(1500, 5, **SMALL, workers=1, progress=calls.append)
    assert len(rows) == 1500 == sum(calls)
    assert len(calls) >= 2 and min(calls) > 0  # several chunks, reported as they arrive


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_depth=1),
        dict(max_args=1),
        dict(min_length=10, max_length=11),
        dict(min_length=200, max_length=300, max_depth=3, max_args=10),  # trees are at most 122 long
    ],
)
def test_impossible_params_fail(kwargs):
    with pytest.raises(ValueError):
        generate(1, 0, **kwargs, workers=1)


def chi2_bound(df: int, z: float = 5.0) -> float:
    """Upper chi-square quantile, Wilson-Hilferty, at normal z (5: false alarm ~3e-7)."""
    c = 2 / (9 * df)
    return df * (1 - c + z * math.sqrt(c)) ** 3


def chi2_uniform(counts: Counter, support) -> float:
    total = sum(counts.values())
    assert set(counts) <= set(support)
    exp = total / len(support)
    return sum((counts[k] - exp) ** 2 / exp for k in support)


def chi2_two_sample(a: Counter, b: Counter) -> tuple[float, int]:
    na, nb = sum(a.values()), sum(b.values())
    keys = [k for k in set(a) | set(b) if a[k] + b[k] > 0]
    stat = sum((math.sqrt(nb / na) * a[k] - math.sqrt(na / nb) * b[k]) ** 2 / (a[k] + b[k]) for k in keys)
    return stat, len(keys) - 1


def reference_like(n: int, seed: int, min_length: int, max_length: int, max_depth: int = 10, max_args: int = 10):
    """Depth-first sampler written from the spec: value iff random() > 0.25 below max_depth."""
    rnd = random.Random(seed)

    class TooLong(Exception):
        pass

    def node(depth: int, budget: list[int]):
        budget[0] += 1
        if depth < max_depth and rnd.random() <= 0.25:
            budget[0] += 1
            k = rnd.randint(2, max_args)
            args = [node(depth + 1, budget) for _ in range(k)]
            return (rnd.choice(OPS), args)
        if budget[0] >= max_length:  # length only grows: this tree is rejected anyway
            raise TooLong
        return rnd.randrange(10)

    seen: dict[str, int] = {}
    while len(seen) < n:
        budget = [0]
        try:
            tree = node(1, budget)
        except TooLong:
            continue
        if min_length < budget[0] < max_length:
            seen.setdefault(print_pairs(tree), eval_tree(tree))
    return list(seen.items())


def features(rows, min_length: int, max_length: int) -> dict[str, Counter]:
    out = {k: Counter() for k in ("label", "length", "root_args", "ops", "depth")}
    for text, label in rows:
        info = eval_lra_tokens(text)
        out["label"][label] += 1
        out["length"][(info["length"] - min_length) * 10 // (max_length - min_length)] += 1  # tenths
        out["root_args"][len(unpair(parse_pairs(text))[1])] += 1
        out["ops"][min(sum(info["ops"].values()), 12)] += 1
        out["depth"][info["max_depth"]] += 1
    return out


def test_same_law_as_a_depth_first_sampler():
    window = dict(min_length=10, max_length=60)  # a window the slow sampler hits often
    ours = features(generate(3000, 21, **window, workers=1), **window)
    ref = features(reference_like(3000, 21, **window), **window)
    for name in ours:
        stat, df = chi2_two_sample(ours[name], ref[name])
        assert stat < chi2_bound(df), f"{name}: chi2 {stat:.1f} on {df} df"


def test_node_law_without_a_binding_window():
    # min_length=3 keeps every operator root and max_length is out of reach, so below the
    # root every node is drawn unconditioned: value w.p. 0.75 above max_depth, args uniform
    max_depth = 6
    rows = generate(3000, 31, min_length=3, max_length=10**6, max_depth=max_depth, workers=1)
    ops, nargs, values, below_root = Counter(), Counter(), Counter(), Counter()
    for text, label in rows:
        info = eval_lra_tokens(text)
        assert info["label"] == label
        ops.update(info["ops"])
        nargs.update(info["nargs"])
        values.update(info["values"])
        for d in range(2, max_depth):
            below_root["value"] += info["value_at"][d]
            below_root["op"] += info["op_at"][d]
        assert info["op_at"][max_depth] == 0
    for counts, support in ((ops, OPS), (nargs, range(2, 11)), (values, range(10))):
        assert chi2_uniform(counts, support) < chi2_bound(len(support) - 1), counts
    total = below_root["value"] + below_root["op"]
    p = below_root["value"] / total
    assert abs(p - 0.75) < 5 * math.sqrt(0.75 * 0.25 / total), (p, total)


def test_label_skew_at_default_length():
    # LRA_SPEC: 0 and 9 about 17% each; the rest near 8% (labels checked row by row above)
    n = 3000
    labels = Counter(label for _, label in generate(n, 41, workers=1))
    tol = 5 * math.sqrt(0.17 * 0.83 / n)  # about 0.034
    for v in (0, 9):
        assert abs(labels[v] / n - 0.17) < tol, labels
    for v in range(1, 9):
        assert labels[v] / n < 0.17 - tol, labels
