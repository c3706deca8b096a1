"""Deal selections: integers must be JSON integers (FAILURES.md D5), checked before any request."""

import pytest

from keepa_deals.keepa_api import KeepaClient, SelectionError, validate_selection

pytestmark = pytest.mark.timeout(10)

# Nothing listens here: a request that slipped through would fail with a transport error.
UNREACHABLE = "http://127.0.0.1:9"
VALID = {
    "page": 0, "domainId": 1, "priceTypes": [2], "dateRange": 3, "sortType": 4,
    "isRangeEnabled": True, "currentRange": [2000, 45100], "deltaPercentRange": [10, 2147483647],
    "salesRankRange": [10000, -1], "isFilterEnabled": True, "includeCategories": [283155],
    "minRating": 10, "singleVariation": True, "warehouseConditions": [2, 3, 4, 5],
    "titleSearch": "python", "brand": ["Acme"],
}


def test_a_real_production_query_is_valid_and_one_string_number_spoils_it():
    assert validate_selection(VALID) is None
    assert validate_selection({"priceTypes": 0}) is None
    with pytest.raises(SelectionError, match="dateRange"):
        validate_selection({**VALID, "dateRange": "3"})


@pytest.mark.parametrize(
    ("key", "value"),
    [("page", "1"), ("domainId", "1"), ("dateRange", "4"), ("sortType", "4"),
     ("sortType", True), ("minRating", 4.5), ("priceTypes", "2"), ("priceTypes", ["2"]),
     ("priceTypes", [2, 1]), ("priceTypes", []), ("currentRange", [2000, "45100"]),
     ("currentRange", [2000]), ("salesRankRange", "10000,-1"), ("includeCategories", 283155),
     ("excludeCategories", ["283155"]), ("warehouseConditions", [2, True]),
     ("isRangeEnabled", "true"), ("singleVariation", 1)],
)
def test_wrongly_typed_values_raise_selection_error_naming_the_key(key, value):
    with pytest.raises(SelectionError, match=repr(key)) as info:
        validate_selection({**VALID, key: value})
    assert isinstance(info.value, ValueError)


def test_selection_must_be_an_object():
    with pytest.raises(SelectionError, match="JSON object"):
        validate_selection([("dateRange", 3)])


def make_client(gate):
    return KeepaClient(UNREACHABLE, "k" * 64, gate, connect_timeout_s=0.2, read_timeout_s=0.2,
                       max_transient_retries=0, retry_backoff_s=0.01)


@pytest.mark.parametrize(
    ("selection", "page", "key"),
    [({"dateRange": "4"}, 0, "dateRange"), ({"sortType": "1"}, 0, "sortType"),
     ({}, "0", "page"), ({}, True, "page"), ({}, -1, "page"), ({"domainId": 3}, 0, "domainId"),
     ({"titleSearch": {1, 2}}, 0, "not JSON-serialisable")],
)
def test_deals_rejects_bad_selections_before_reserving_tokens(gate, selection, page, key):
    with pytest.raises(SelectionError, match=key):
        make_client(gate).deals(selection, page=page)
    assert gate.reserved == [] and gate.reconciled == []
