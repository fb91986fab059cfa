"""The HubSpot sandbox's production rules (sandbox/hubspot/quirks.py and the always-on ones), seen
through hubspot-api-client as any client would: a ``date`` property refuses a time of day with the
live INVALID_DATE text; search answers carry no rate-limit headers; 429s carry no Retry-After."""

from __future__ import annotations

import json

import pytest
from hubspot.crm.contacts import ApiException, SimplePublicObjectInputForCreate
from urllib3.util.retry import Retry

from sandbox.hubspot.objects import not_midnight_message
from tests.sandbox.hubspot_support import Served, hs_ca, served

__all__ = ["hs_ca", "served"]


def test_a_date_property_refuses_a_time_of_day_with_hubspots_text(served: Served) -> None:
    served.hs.add_property("contacts", "renewal_date", type="date", field_type="date")
    api = served.client().crm.contacts.basic_api
    with pytest.raises(ApiException) as exc:
        api.create(SimplePublicObjectInputForCreate(properties={"renewal_date": "1606768561954"}))
    body = json.loads(exc.value.body)
    assert exc.value.status == 400 and body["category"] == "VALIDATION_ERROR"
    problems = json.loads(body["message"].removeprefix("Property values were not valid: "))
    assert problems == [
        {
            "isValid": False,
            "message": "1606768561954 is at 20:36:1.954 UTC, not midnight!",
            "error": "INVALID_DATE",
            "name": "renewal_date",
        }
    ]
    ok = api.create(SimplePublicObjectInputForCreate(properties={"renewal_date": "1606694400000"}))
    assert ok.properties["renewal_date"] == "2020-11-30"
    assert not_midnight_message(1641038400000) == "1641038400000 is at 12:0:0.0 UTC, not midnight!"


def test_search_answers_carry_no_rate_limit_headers_but_lists_do(served: Served) -> None:
    _, _, headers = served.client().crm.contacts.search_api.do_search_with_http_info({"limit": 1})
    assert not [h for h in headers if h.lower().startswith("x-hubspot-ratelimit")]
    _, _, headers = served.client().crm.contacts.basic_api.get_page_with_http_info(limit=1)
    assert "X-HubSpot-RateLimit-Remaining" in headers


def test_a_429_of_the_rate_limiter_carries_no_retry_after_unless_asked(served: Served) -> None:
    served.hs.set_burst_limit(1, window_s=10.0)
    api = served.client(retry=Retry(0)).crm.contacts.basic_api
    api.get_page(limit=1)
    with pytest.raises(ApiException) as exc:
        api.get_page(limit=1)
    assert exc.value.status == 429 and "Retry-After" not in exc.value.headers
    assert json.loads(exc.value.body)["policyName"] == "TEN_SECONDLY_ROLLING"
    served.hs.quirks.retry_after_header = True
    with pytest.raises(ApiException) as exc:
        api.get_page(limit=1)
    assert 1 <= int(exc.value.headers["Retry-After"]) <= 10
