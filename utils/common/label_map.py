"""Read and write label maps in the TF Object Detection API's pbtxt format.

    item {
      id: 1
      name: 'hand'
    }
Ids are 1-based; 0 is the background.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from utils.common.errors import UserError
from utils.common.fileio import atomic_write_text

_ITEM_RE = re.compile(r"item\s*\{(.*?)\}", re.S)
_FIELD_RE = re.compile(r"(\w+)\s*:\s*(?:'([^']*)'|\"([^\"]*)\"|(\S+))")


class LabelMapError(UserError):
    """A label map file that cannot be read."""


def label_map_text(names: Sequence[str]) -> str:
    """The pbtxt text for class names, ids 1..N in the given order."""
    return "".join(f"item {{\n  id: {i}\n  name: '{name}'\n}}\n" for i, name in enumerate(names, 1))


def write_label_map(path: str | os.PathLike, names: Sequence[str]) -> None:
    atomic_write_text(path, label_map_text(names))


def parse_label_map(text: str, source: str = "<text>") -> dict[int, str]:
    """Map id -> name. Raises LabelMapError on a malformed item, a duplicate or non-positive id."""
    text = re.sub(r"#.*", "", text)
    id_to_name: dict[int, str] = {}
    for body in _ITEM_RE.findall(text):
        fields = {m.group(1): next(g for g in m.groups()[1:] if g is not None)
                  for m in _FIELD_RE.finditer(body)}
        name = fields.get("name", fields.get("display_name"))
        if "id" not in fields or name is None:
            raise LabelMapError(f"{source}: label map item without id and name: {body.strip()!r}")
        try:
            item_id = int(fields["id"])
        except ValueError as exc:
            raise LabelMapError(f"{source}: label map id is not an integer: {fields['id']!r}") from exc
        if item_id < 1 or item_id in id_to_name:
            raise LabelMapError(f"{source}: label map id {item_id} is not positive or is repeated")
        id_to_name[item_id] = name
    if not id_to_name:
        raise LabelMapError(f"{source}: no 'item {{ id: N name: '...' }}' entries found")
    return id_to_name


def read_label_map(path: str | os.PathLike) -> dict[int, str]:
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as exc:
        raise LabelMapError(f"{path}: cannot read label map ({exc.strerror})") from exc
    return parse_label_map(text, source=str(path))


def class_names(id_to_name: Mapping[int, str]) -> list[str]:
    """Names ordered by id (ids must be 1..N)."""
    if sorted(id_to_name) != list(range(1, len(id_to_name) + 1)):
        raise LabelMapError(f"label map ids must be 1..N, got {sorted(id_to_name)}")
    return [id_to_name[i] for i in range(1, len(id_to_name) + 1)]
