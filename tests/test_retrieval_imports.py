"""Import resolution: absolute, relative, `from pkg import mod`, aliases, re-exports, src layouts."""

from __future__ import annotations

import pytest

from titans_lsp.retrieval.index import WorkspaceIndex
from titans_lsp.retrieval.imports import parse_imports

FILES = {
    "src/shop/__init__.py": "from .models import Order\n",
    "src/shop/models.py": (
        "class Order:\n    \"\"\"A customer order.\"\"\"\n    def __init__(self, items, customer):\n        self.items = items\n"
        "    def total(self, tax_rate=0.2):\n        return sum(i.price for i in self.items) * (1 + tax_rate)\n\n"
        "MAX_ITEMS = 50\n"
    ),
    "src/shop/pricing/__init__.py": "",
    "src/shop/pricing/discounts.py": (
        "def apply_discount(order, percent):\n    \"\"\"Reduce every item price by percent.\"\"\"\n    return order\n\n"
        "def loyalty_bonus(customer):\n    return 0.05\n"
    ),
    "src/shop/pricing/tax.py": "def vat_for(country: str) -> float:\n    return 0.2\n",
    "src/shop/checkout/__init__.py": "",
    "src/shop/checkout/cart.py": "",  # the current file: its prefix comes from the test
}


@pytest.fixture
def index(tmp_path) -> WorkspaceIndex:
    for rel, text in FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    built = WorkspaceIndex(tmp_path, None, dense_model=None)
    built.build()
    return built


def names(index, prefix, current="src/shop/checkout/cart.py"):
    return [(s.filename, s.text.split("\n")[0]) for s in index.retrieve(prefix, current, "imports", k=10)]


def test_parse_forms():
    got = parse_imports("import a.b\nimport c as d\nfrom .x import y as z\nfrom ..p import q\nfrom m import (n, o)\n"
                        "try:\n    from t import u\nexcept ImportError:\n    u = None\n")
    assert [(b.alias, b.module, b.symbol, b.level) for b in got] == [
        ("a.b", "a.b", None, 0), ("d", "c", None, 0), ("z", "x", "y", 1), ("q", "p", "q", 2),
        ("n", "m", "n", 0), ("o", "m", "o", 0), ("u", "t", "u", 0)]


def test_absolute_import(index):
    assert names(index, "from shop.pricing.discounts import apply_discount\n\norder = apply_discount(") == [
        ("src/shop/pricing/discounts.py", "def apply_discount(order, percent):")]


def test_relative_import(index):
    got = names(index, "from ..pricing.tax import vat_for\nfrom ..models import MAX_ITEMS\n\nrate = vat_for('FR')\n")
    assert ("src/shop/pricing/tax.py", "def vat_for(country: str) -> float:") in got
    assert ("src/shop/models.py", "MAX_ITEMS = 50") in got


def test_from_package_import_module(index):
    got = names(index, "from shop.pricing import discounts\n\nbonus = discounts.loyalty_bonus(customer)\nx = discounts.apply_discount(")
    assert got[0] == ("src/shop/pricing/discounts.py", "def apply_discount(order, percent):")  # nearest use first
    assert got[1] == ("src/shop/pricing/discounts.py", "def loyalty_bonus(customer):")


def test_aliases_and_reexport(index):
    got = names(index, "import shop.pricing.tax as tx\nfrom shop import Order as O\n\nrate = tx.vat_for(c)\norder = O(items, c)\n")
    assert got[0] == ("src/shop/models.py", "class Order:")  # via `from .models import Order` in __init__
    assert got[1] == ("src/shop/pricing/tax.py", "def vat_for(country: str) -> float:")
    class_chunk = index.retrieve("from shop import Order\nOrder(", "src/shop/checkout/cart.py", "imports", k=1)[0].text
    assert "def total(self, tax_rate=0.2):" in class_chunk and "A customer order." in class_chunk


def test_unresolvable_imports_are_skipped(index):
    assert names(index, "import numpy as np\nfrom os import path\nnp.zeros(3)\n") == []


def test_import_context_over_a_plain_dict():
    from titans_lsp.retrieval.imports import import_context

    got = import_context("from shop.pricing import tax\nrate = tax.vat_for(", "src/shop/checkout/cart.py", dict(FILES))
    assert [(s.filename, s.name) for s in got] == [("src/shop/pricing/tax.py", "vat_for")]


def test_plain_dotted_import_attribute(index):
    assert names(index, "import shop.pricing.discounts\n\nbonus = shop.pricing.discounts.loyalty_bonus(c)\n") == [
        ("src/shop/pricing/discounts.py", "def loyalty_bonus(customer):")]
