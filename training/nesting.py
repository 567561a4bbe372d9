"""How deeply a parsed user file nests, measured without recursion.

Readers of users' files (model artifacts' JSON members, campaign specs' TOML) refuse
documents nested deeper than any real one, with one error line, instead of meeting Python's
recursion limit later.
"""

from __future__ import annotations

from typing import Any


def nesting_depth(value: Any, limit: int) -> int:
    """Levels of dicts and lists in a parsed value; counting stops a level past `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= limit:
                children = item.values() if isinstance(item, dict) else item
                stack.extend((child, level + 1) for child in children)
    return deepest
