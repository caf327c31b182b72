"""The one place where contiguous model labels and real (COCO) category ids meet.

Label 0 is background; labels 1..K are the categories sorted by id. COCO's ids are not
contiguous (1..90 with gaps), so ``label != category_id`` in general.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CategoryMap:
    ids: tuple[int, ...]  # real category ids, sorted; label k (1..K) is ids[k - 1]
    names: tuple[str, ...]

    @classmethod
    def from_coco(cls, categories: list[dict]) -> "CategoryMap":
        cats = sorted(categories, key=lambda c: c["id"])
        ids = tuple(int(c["id"]) for c in cats)
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate category ids {dup[:10]}")
        return cls(ids=ids, names=tuple(str(c["name"]) for c in cats))

    @property
    def num_classes(self) -> int:
        """K + 1 (background included), as torchvision's detection models count."""
        return len(self.ids) + 1

    def label(self, category_id: int) -> int:
        try:
            return self._label_of[category_id]
        except KeyError:
            raise KeyError(f"unknown category id {category_id}") from None

    def category_id(self, label: int) -> int:
        if not 1 <= label <= len(self.ids):
            raise KeyError(f"label {label} is outside 1..{len(self.ids)} (0 is background)")
        return self.ids[label - 1]

    def name(self, label: int) -> str:
        self.category_id(label)  # range check
        return self.names[label - 1]

    @property
    def _label_of(self) -> dict[int, int]:
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = {cid: k + 1 for k, cid in enumerate(self.ids)}
            object.__setattr__(self, "_cache", cache)
        return cache
