"""MQTT topic filters: matching as the protocol gateway under edgeHub does it, and a trie of filters.

Matching is the standard one with two differences edgeHub has: a ``#`` filter also matches topics
that start with ``$`` (``#`` sees ``$iothub/...``), and it is case-sensitive like the standard. ``+``
matches one level, an empty one included; ``a/#`` matches ``a`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


def filter_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter``."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels):
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def valid_filter(topic_filter: str) -> bool:
    """MQTT 3.1.1 §4.7: ``#`` only as the whole last level, ``+`` only as a whole level, not empty."""
    if not topic_filter or "\x00" in topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


@dataclass
class _Node(Generic[T]):
    children: dict[str, _Node[T]] = field(default_factory=dict)
    values: dict[object, T] = field(default_factory=dict)


class TopicTrie(Generic[T]):
    """Filters -> values (keyed, so one owner has at most one value per filter), and the values whose
    filter matches a topic, without scanning every filter."""

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()

    def add(self, topic_filter: str, key: object, value: T) -> None:
        node = self._root
        for level in topic_filter.split("/"):
            node = node.children.setdefault(level, _Node())
        node.values[key] = value

    def remove(self, topic_filter: str, key: object) -> None:
        path = [self._root]
        for level in topic_filter.split("/"):
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        path[-1].values.pop(key, None)
        levels = topic_filter.split("/")
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.values or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]

    def match(self, topic: str) -> Iterator[tuple[object, T]]:
        """Every (key, value) whose filter matches ``topic``."""
        levels = topic.split("/")
        stack: list[tuple[_Node[T], int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            hash_node = node.children.get("#")
            if hash_node is not None:
                yield from hash_node.values.items()
            if depth == len(levels):
                yield from node.values.items()
                continue
            level = levels[depth]
            exact = node.children.get(level)
            if exact is not None:
                stack.append((exact, depth + 1))
            plus = node.children.get("+")
            if plus is not None:
                stack.append((plus, depth + 1))
