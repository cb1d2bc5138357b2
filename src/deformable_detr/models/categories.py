"""Matching two category lists by name: `train --init` (class-head rows) and `eval --checkpoint` (labels -> ids).

A category is {"id": int, "name": str}; a list of them is in label order (label k = entry k). Names
match when equal after stripping surrounding whitespace and ignoring case ("Cat " matches "cat").
"""

from __future__ import annotations


def category_key(name) -> str:
    """The form of a category name that matching compares: stripped, lower-case ("" for no name)."""
    return str(name if name is not None else "").strip().lower()


def category_mapping(source_categories: list[dict], target_categories: list[dict]) -> dict[int, int]:
    """{target label: source label} for categories whose names match (stripped, case-insensitive).

    A name that occurs twice in the source maps to its first label; `duplicate_names` finds such names.
    """
    source_index = {}
    for label, category in enumerate(source_categories):
        source_index.setdefault(category_key(category.get("name")), label)
    mapping = {}
    for label, category in enumerate(target_categories):
        key = category_key(category.get("name"))
        if key and key in source_index:
            mapping[label] = source_index[key]
    return mapping


def duplicate_names(categories: list[dict]) -> dict[str, list[dict]]:
    """{matching key: the categories sharing it} for every name (as `category_key` compares) held more than once."""
    groups: dict[str, list[dict]] = {}
    for category in categories:
        groups.setdefault(category_key(category.get("name")), []).append(category)
    return {key: group for key, group in groups.items() if key and len(group) > 1}
