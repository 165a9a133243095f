"""A reader of the site's packed shard columns written from their description in docs/ARCHITECTURE.md
("Site", packed columns), apart from the render stage's encoder, for tests that read shards."""

from __future__ import annotations

DIGITS = [c for c in map(chr, range(0x20, 0x7F)) if c not in '"\\<>&.']
TERMINAL = 60


def _numbers(s: str, at: int = 0):
    """Yields (number or '.', next index) through `s`."""
    value = {c: n for n, c in enumerate(DIGITS)}
    cont = len(DIGITS) - TERMINAL
    while at < len(s):
        if s[at] == ".":
            at += 1
            yield ".", at
            continue
        acc, m = 0, 0
        while value[s[at]] >= TERMINAL:
            acc = acc * cont + value[s[at]] - TERMINAL
            m += 1
            at += 1
        # numbers with fewer digits come first: TERMINAL * cont**j of each length j < m
        offset = sum(TERMINAL * cont**j for j in range(m))
        number = offset + acc * TERMINAL + value[s[at]]
        at += 1
        yield number, at


def ints(s) -> list[int]:
    """A packed list of integers (a list passes as it is)."""
    return s if isinstance(s, list) else [n for n, _ in _numbers(s)]


def example_values(s) -> list:
    """`dfa`/`loss`: per example [offsets, q]."""
    if isinstance(s, list):
        return s
    numbers = [n for n, _ in _numbers(s)]
    out, at = [], 0
    while at < len(numbers):
        n, at = numbers[at], at + 1
        offsets, qs, previous = [], [], -1
        for _ in range(n):
            previous += 1 + numbers[at]
            z = numbers[at + 1]
            at += 2
            offsets.append(previous)
            qs.append(-(z + 1) // 2 if z % 2 else z // 2)
        out.append([offsets, qs])
    return out


def text(s: str, top: list, k: int) -> list:
    """`tt`: per top example (lo, ranks, ended), lo = max(0, position - k), up to position + k tokens."""
    items = [n for n, _ in _numbers(s)]
    out, at = [], 0
    for example in top:
        lo = max(0, example[1] - k)
        ranks, ended = [], False
        while at < len(items) and items[at] != "." and lo + len(ranks) <= example[1] + k:
            ranks.append(items[at])
            at += 1
        if at < len(items) and items[at] == ".":
            ended, at = True, at + 1
        out.append((lo, ranks, ended))
    return out
