"""The deterministic product catalogue of one (seed, domain): static attributes and histories.

Every product is drawn from `rng(seed, domain, index)`; its csv series come in four families
(see history.py): NEW prices (AMAZON, NEW, NEW_FBA, COUNT_NEW, BUY_BOX_SHIPPING), USED prices
(USED, COUNT_USED, plus the warehouse condition), the sales rank, and constants (LISTPRICE,
RATING, COUNT_REVIEWS). Prices are integer cents, ranks integers, −1 = no data.

A catalogue lives as long as the simulator and holds a few objects per product: epoch levels are
`functools.partial`s of module functions (no closures and cells), which keeps the cyclic garbage
collector's full passes short at 100 000 products.
"""

from __future__ import annotations

import contextlib
import gc
import math
import string
from dataclasses import dataclass
from functools import partial

from keepa_sim import categories
from keepa_sim.history import CONSTANT_PERIOD, MINUTES_PER_DAY, Family, UpdateGrid
from keepa_sim.rand import rng, stream

# csv type -> (family index, position in the family's values)
TYPE_SLOTS: dict[int, tuple[int, int]] = {
    0: (0, 0), 1: (0, 1), 10: (0, 2), 11: (0, 3), 18: (0, 4),
    2: (1, 0), 12: (1, 1),
    3: (2, 0),
    4: (3, 0), 16: (3, 1), 17: (3, 2),
}
USED_FAMILY, USED_CONDITION_SLOT = 1, 2
SHIPPING_TYPES = frozenset({18})  # csv types stored as [t, price, shipping] triples

_ASIN_CHARS = string.digits + string.ascii_uppercase
_IMAGE_CHARS = string.ascii_letters + string.digits
_TRACKING_RANGE = (4_500_000, 6_900_000)  # Keepa minutes (2019 .. 2024)
_FIRST_NAMES = ("Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Iris",
                "Jonas", "Kate", "Liam", "Maya", "Noah", "Olivia", "Paul", "Rosa", "Sam")
_LAST_NAMES = ("Archer", "Baker", "Carter", "Dawson", "Ellis", "Fischer", "Garcia", "Hayes",
               "Ibsen", "Jensen", "Keller", "Lopez", "Morgan", "Novak", "Okafor", "Price")
_ADJECTIVES = ("Silent", "Golden", "Hidden", "Modern", "Complete", "Essential", "Wild", "Little",
               "Ultimate", "Classic", "Broken", "Bright", "Lost", "Practical", "Secret", "Red")
_BOOK_NOUNS = ("River", "Garden", "Kingdom", "Memory", "Algorithm", "Ocean", "Empire", "Letter",
               "Mountain", "Physics", "Cooking", "History", "Journey", "Island", "Machine")
_THING_NOUNS = ("Speaker", "Blender", "Backpack", "Lamp", "Puzzle", "Kettle", "Charger", "Tent",
                "Headphones", "Organizer", "Drill", "Mug", "Camera", "Shampoo", "Board Game")
_BRANDS = ("Acme", "Northwind", "Bluepeak", "Everlite", "Kinetix", "Solace", "Maple & Co",
           "Orbital", "Vantage", "Zephyr")
_PUBLISHERS = ("Penguin House", "Harbor Press", "Oakleaf Books", "Summit Publishing",
               "Lantern Editions")
_COLORS = ("Black", "White", "Blue", "Red", "Silver", "Green")
_BINDINGS = ("Paperback", "Hardcover", "Mass Market Paperback")
_LANGUAGES = {1: "English", 2: "English", 3: "German", 4: "French", 5: "Japanese", 6: "English",
              8: "Italian", 9: "Spanish", 10: "English", 11: "Spanish", 12: "Portuguese"}
_PRICE_DOLLARS = {283155: (15, 300)}  # books include textbooks; others below
_DEFAULT_PRICE_DOLLARS = (8, 400)
_PRODUCT_PURPOSE, _ASIN_PURPOSE, _PARENT_PURPOSE = 1, 2, 3
_FAMILY_PURPOSE = 10


@dataclass(frozen=True, slots=True)
class Product:
    index: int
    domain: int
    asin: str
    title: str
    root: int  # 0 = unknown root
    child: int | None
    brand: str
    manufacturer: str
    product_group: str
    binding: str | None
    author: str | None
    color: str | None
    attributes: dict[str, str]  # lower-cased values for the deal attribute filters
    parent_asin: str | None
    image: str
    ean: str
    rating: int  # 0..50, −1 = none
    reviews: int
    erotic: bool
    grid: UpdateGrid
    tracking_since: int
    listed_since: int
    families: tuple[Family, ...]

    @property
    def categories(self) -> list[int]:
        if not self.root:
            return []
        return [self.root] if self.child is None else [self.root, self.child]

    def family_of(self, csv_type: int) -> tuple[Family, int] | None:
        slot = TYPE_SLOTS.get(csv_type)
        return None if slot is None else (self.families[slot[0]], slot[1])

    def last_update(self, minute: int) -> int:
        return self.grid.last_at_or_before(minute)


class Catalogue:
    """All products of one seed and domain, with lookups by ASIN and by EAN."""

    def __init__(self, seed: int, domain: int, n_products: int):
        self.seed = seed
        self.domain = domain
        self.products: list[Product] = []
        self.by_asin: dict[str, Product] = {}
        with _collector_paused():
            for index in range(n_products):
                product = _make_product(seed, domain, index, self.by_asin)
                self.products.append(product)
                self.by_asin[product.asin] = product
        self.by_ean = {product.ean: product for product in self.products}


@contextlib.contextmanager
def _collector_paused():
    """Pause the cyclic garbage collector: a build allocates millions of objects that all stay
    alive, and its repeated passes over them would double the build time. One full pass at the
    end moves them to the oldest generation at once (else the next allocations pay for it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
            gc.collect()


def _make_product(seed: int, domain: int, index: int, taken: dict) -> Product:
    r = rng(seed, domain, index, _PRODUCT_PURPOSE)
    root = _draw_root(r.random())
    is_book = root == 283155
    children = categories.children_of(root)
    child = r.choice(children) if children and r.random() < 0.9 else None
    group = categories.ROOTS[root][1] if root else "Unknown"
    brand = r.choice(_PUBLISHERS if is_book else _BRANDS)
    author = f"{r.choice(_FIRST_NAMES)} {r.choice(_LAST_NAMES)}" if is_book else None
    binding = r.choice(_BINDINGS) if is_book else None
    color = r.choice(_COLORS) if not is_book and r.random() < 0.5 else None
    title = (f"The {r.choice(_ADJECTIVES)} {r.choice(_BOOK_NOUNS)}" if is_book else
             f"{brand} {r.choice(_ADJECTIVES)} {r.choice(_THING_NOUNS)}")
    if r.random() < 0.5:
        title += f" - {r.choice(_ADJECTIVES)} {r.choice(_BOOK_NOUNS if is_book else _THING_NOUNS)}"
    variation = not is_book and r.random() < 0.2
    parent = _asin(stream(seed, domain, index // 3, _PARENT_PURPOSE)) if variation else None
    low, high = _PRICE_DOLLARS.get(root, _DEFAULT_PRICE_DOLLARS)
    base_new = 100 * math.exp(r.uniform(math.log(low), math.log(high)))
    interval = _draw_update_interval(r)
    grid = UpdateGrid(interval, r.randrange(interval))
    tracking = r.randrange(*_TRACKING_RANGE)
    has_rating = r.random() < 0.85
    rating = r.randint(20, 50) if has_rating else -1
    reviews = int(math.exp(r.uniform(0, math.log(20_000)))) if has_rating else 0
    rank_low, rank_high = (5_000, 8_000_000) if is_book else (100, 400_000)
    rank_base = -1 if r.random() < 0.04 else int(math.exp(r.uniform(math.log(rank_low),
                                                                     math.log(rank_high))))
    list_price = int(base_new * 1.3) if r.random() < 0.8 else -1
    family_stream = stream(seed, domain, index, _FAMILY_PURPOSE)

    def family(n, types, days, levels):
        period = max(int(days * MINUTES_PER_DAY), 2 * interval)
        return Family(types, period=period, offset=r.randrange(period), stream=family_stream + n,
                      grid=grid, tracking_since=tracking, levels=levels)

    families = (
        family(0, (0, 1, 10, 11, 18), r.uniform(4, 20),
               partial(_new_levels, base_new, r.uniform(0.01, 0.05), r.uniform(0.15, 0.35),
                       r.random() < (0.5 if is_book else 0.4))),
        family(1, (2, 12), r.uniform(4, 16),
               partial(_used_levels, base_new * r.uniform(0.6, 1.0), r.uniform(0.02, 0.08),
                       r.uniform(0.45, 0.7))),
        family(2, (3,), r.uniform(4, 12), partial(_rank_levels, rank_base, r.uniform(0.1, 0.3))),
        Family((4, 16, 17), period=CONSTANT_PERIOD, offset=tracking, stream=0, grid=grid,
               tracking_since=tracking, levels=partial(_constant, (list_price, rating, reviews))),
    )
    manufacturer = brand
    attributes = {"brand": brand, "manufacturer": manufacturer, "productGroup": group,
                  "languages": _LANGUAGES[domain],
                  "websiteDisplayGroup": group.lower().replace(" ", "_") + "_display_on_website",
                  "salesRankDisplayGroup": group.lower().replace(" ", "_") + "_display_on_website"}
    for name, value in (("binding", binding), ("format", binding), ("author", author),
                        ("color", color)):
        if value:
            attributes[name] = value
    return Product(
        index=index, domain=domain, asin=_unique_asin(seed, domain, index, taken), title=title,
        root=root, child=child, brand=brand, manufacturer=manufacturer, product_group=group,
        binding=binding, author=author, color=color,
        attributes={k: v.lower() for k, v in attributes.items()}, parent_asin=parent,
        image=f"{r.randint(41, 81)}{''.join(r.choices(_IMAGE_CHARS, k=9))}.jpg",
        ean=_ean(r, is_book), rating=rating, reviews=reviews, erotic=r.random() < 0.005,
        grid=grid, tracking_since=tracking,
        listed_since=tracking - r.randrange(2 * 365 * MINUTES_PER_DAY), families=families)


def _draw_root(u: float) -> int:
    for root, (_name, _group, weight, _children) in categories.ROOTS.items():
        if u < weight:
            return root
        u -= weight
    return 0


def _draw_update_interval(r) -> int:
    """Minutes between Keepa's refreshes of a product: most within 12 h, some slower."""
    tier = r.random()
    low, high = ((15, 60) if tier < 0.3 else (60, 360) if tier < 0.75 else
                 (360, 720) if tier < 0.92 else (720, 2160))
    return r.randint(low, high)


def _asin(value: int) -> str:
    chars = []
    for _ in range(8):
        value, digit = divmod(value, 36)
        chars.append(_ASIN_CHARS[digit])
    return "B0" + "".join(chars)


def _unique_asin(seed: int, domain: int, index: int, taken: dict) -> str:
    attempt = 0
    while (asin := _asin(stream(seed, domain, index, _ASIN_PURPOSE, attempt))) in taken:
        attempt += 1
    return asin


def _ean(r, is_book: bool) -> str:
    body = ("978" if is_book else "0") + "".join(r.choices(string.digits, k=9 if is_book else 11))
    total = sum(int(d) * (3 if n % 2 else 1) for n, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


# Prices are int(base × factor) cents: bases are >= 800 cents and factors >= 0.2, so never 0.


def _new_levels(base: float, p_oos: float, p_drop: float, has_amazon: bool, h: int) -> tuple:
    """(AMAZON, NEW, NEW_FBA, COUNT_NEW, BUY_BOX_SHIPPING) of the epoch with hash h."""
    u0 = (h & 0xFFFF) / 65536.0
    if u0 < p_oos:
        return (-1, -1, -1, 0, -1)
    u1 = ((h >> 16) & 0xFFFF) / 65536.0
    factor = (0.92 - 0.72 * u1 ** 2.5) if u0 < p_oos + p_drop else (0.97 + 0.08 * u1)
    new = int(base * factor)
    u2 = ((h >> 32) & 0xFFFF) / 65536.0
    u3 = (h >> 48) / 65536.0
    amazon = int(new * (1 + 0.06 * u3)) if has_amazon and u2 > 0.15 else -1
    fba = int(new * (1 + 0.1 * u2))
    return (amazon, new, fba, 1 + int(u3 * 24), amazon if amazon >= 0 else fba)


def _used_levels(base: float, p_oos: float, p_drop: float, h: int) -> tuple:
    """(USED, COUNT_USED, warehouse condition 2..5) of the epoch with hash h."""
    u0 = (h & 0xFFFF) / 65536.0
    if u0 < p_oos:
        return (-1, 0, 0)
    u1 = ((h >> 16) & 0xFFFF) / 65536.0
    factor = (0.9 - 0.7 * u1 ** 2) if u0 < p_oos + p_drop else (0.96 + 0.1 * u1)
    u2 = ((h >> 32) & 0xFFFF) / 65536.0
    return (int(base * factor), 1 + int((h >> 48) / 65536.0 * 30), 2 + int(u2 * 4))


def _rank_levels(base: int, p_jump: float, h: int) -> tuple:
    """(SALES,) of the epoch with hash h: noise around the base rank, sometimes a big
    improvement."""
    if base < 0:
        return (-1,)
    u0 = (h & 0xFFFF) / 65536.0
    u1 = ((h >> 16) & 0xFFFF) / 65536.0
    factor = math.exp(1.4 * (u1 - 0.5))
    if u0 < p_jump:
        factor *= 0.15 + 0.45 * ((h >> 32) & 0xFFFF) / 65536.0
    return (max(1, int(base * factor)),)


def _constant(values: tuple, _h: int) -> tuple:
    return values
