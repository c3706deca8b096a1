"""The simulator's category tree: a dozen real Amazon root categories with synthetic children.

Child ids are `root * 100 + n` (never a root id). Products of the unknown root have
`rootCategory` 0 and count under `UNKNOWN_ROOT` ("?") in deal aggregates.
"""

from __future__ import annotations

UNKNOWN_ROOT = 9_223_372_036_854_775_807
UNKNOWN_ROOT_NAME = "?"

# root id: (name, product group, catalogue weight, children)
ROOTS: dict[int, tuple[str, str, float, tuple[str, ...]]] = {
    283155: ("Books", "Book", 0.45, ("Literature & Fiction", "Mystery & Thrillers",
                                     "Science Fiction & Fantasy", "History", "Children's Books",
                                     "Cookbooks")),
    172282: ("Electronics", "Electronics", 0.09, ("Headphones", "Cameras", "Computer Accessories",
                                                  "Television & Video")),
    1055398: ("Home & Kitchen", "Home", 0.09, ("Kitchen & Dining", "Bedding", "Furniture",
                                               "Storage & Organization")),
    165793011: ("Toys & Games", "Toy", 0.06, ("Puzzles", "Building Toys", "Board Games")),
    16310101: ("Grocery & Gourmet Food", "Grocery", 0.03, ("Snacks", "Beverages", "Coffee")),
    3760911: ("Beauty & Personal Care", "Beauty", 0.04, ("Skin Care", "Hair Care", "Fragrance")),
    3375251: ("Sports & Outdoors", "Sports", 0.06, ("Camping & Hiking", "Fitness", "Cycling")),
    2619525011: ("Appliances", "Major Appliances", 0.02, ("Refrigerators", "Ranges", "Washers")),
    468642: ("Video Games", "Video Games", 0.04, ("Consoles", "Accessories", "PC Games")),
    5174: ("CDs & Vinyl", "Music", 0.03, ("Rock", "Jazz", "Classical")),
    228013: ("Tools & Home Improvement", "Home Improvement", 0.04, ("Power Tools", "Hand Tools",
                                                                    "Lighting")),
    2625373011: ("Movies & TV", "DVD", 0.03, ("Blu-ray", "DVD", "TV Series")),
}

CHILDREN: dict[int, tuple[int, str]] = {
    root * 100 + n: (root, child) for root, (_name, _group, _w, children) in ROOTS.items()
    for n, child in enumerate(children, start=1)
}


_CHILDREN_OF: dict[int, tuple[int, ...]] = {
    root: tuple(child for child, (parent, _name) in CHILDREN.items() if parent == root)
    for root in ROOTS
}


def children_of(root: int) -> tuple[int, ...]:
    return _CHILDREN_OF.get(root, ())


def name(category_id: int) -> str:
    if category_id in ROOTS:
        return ROOTS[category_id][0]
    if category_id in CHILDREN:
        return CHILDREN[category_id][1]
    return UNKNOWN_ROOT_NAME


def aggregate_root(root: int) -> int:
    """The id a product's root counts under in deal aggregates."""
    return root if root in ROOTS else UNKNOWN_ROOT
