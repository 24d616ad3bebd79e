"""Seeded mutation of parsed configs (structure) and of their text (bytes), for the parser fuzz tests.

Used by ``tests/security/test_parser_fuzz.py`` (a bounded number of cases in CI) and by
``benchmarks/fuzz_parsers.py`` (a long run that prints totals).
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2, 3, 7, -(2**63), 2**64, 10**400 if False else 1e308, -1e308, float("nan"),
    float("inf"), float("-inf"), 0.0, -0.0, 1e-320, "", "x", "x" * 5000, "$__import__('os').system('true')",
    "@missing#ref", "@", "$", "$1/0", "../../etc/passwd", "\n\r\x00", "RAS", "argmax", [], [[]], [0], [0, 0, 0],
    [-1, -1, -1], [1e308, 1e308, 1e308], [None], ["a", "b", "c"], {}, {"_target_": "Compose"},
    {"_target_": "os.system", "command": "true"}, {"a": {"b": {"c": {}}}}, list(range(200)),
]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if len(prefix) > 12:  # do not walk into the deep/huge nodes an earlier mutation made
        return out
    if isinstance(obj, list) and len(obj) > 50:
        return out
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _deep(depth: int) -> Any:
    node: Any = 1
    for _ in range(depth):
        node = [node]
    return node


def mutate_structure(obj: Any, rng: random.Random, n_mutations: int | None = None) -> Any:
    """A deep copy of ``obj`` with 1-3 random structural mutations (replace, delete, add, nest, grow)."""
    obj = copy.deepcopy(obj)
    for _ in range(n_mutations or rng.randint(1, 3)):
        paths = _paths(obj)
        path = rng.choice(paths)
        op = rng.random()
        if not path:  # the root itself
            if op < 0.1:
                return rng.choice(HOSTILE_VALUES)
            continue
        parent, key = _get(obj, path[:-1]), path[-1]
        if op < 0.55:
            parent[key] = copy.deepcopy(rng.choice(HOSTILE_VALUES))
        elif op < 0.7:
            del parent[key]
        elif op < 0.8 and isinstance(parent, dict):
            parent[rng.choice(["unknown", "_target_", "__class__", str(key) + "x"])] = rng.choice(HOSTILE_VALUES)
        elif op < 0.88:
            parent[key] = _deep(rng.choice([50, 300, 800]))
        elif op < 0.94:
            parent[key] = [parent[key]] * rng.choice([2, 1000])
        else:  # swap type: number <-> string
            v = parent[key]
            parent[key] = str(v) if not isinstance(v, str) else (len(v) or -1)
    return obj


def mutate_text(text: str, rng: random.Random) -> str:
    """``text`` with byte-level damage: truncation, flipped/inserted/deleted characters, duplicated spans."""
    data = bytearray(text.encode("utf-8"))
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        i = rng.randrange(len(data))
        op = rng.random()
        if op < 0.2:
            del data[i:]
        elif op < 0.45:
            data[i] = rng.randrange(256)
        elif op < 0.65:
            data[i:i] = bytes(rng.choice(b"[]{}:,\"'-&*!|>#@$\\\n 0") for _ in range(rng.randint(1, 8)))
        elif op < 0.8:
            del data[i:i + rng.randint(1, 20)]
        else:
            j = min(len(data), i + rng.randint(1, 200))
            data[j:j] = data[i:j] * rng.randint(1, 50)
    return data.decode("utf-8", errors="replace")


def billion_laughs(levels: int = 12) -> str:
    """A YAML document whose aliases expand to ``10**levels`` nodes when walked."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True)
