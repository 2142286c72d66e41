"""The Google sandbox's duplicate checks, answered from its field index: a taken name is
refused, a removed or renamed object frees its name, another customer's name is not a
conflict, and seeded objects count."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from services.sandbox.google_errors import ApiError
from services.sandbox.google_mutate import MutateEngine
from services.sandbox.state import SandboxState

VERSION = "v26"
_budget = importlib.import_module(
    f"google.ads.googleads.{VERSION}.services.types.campaign_budget_service"
)
_campaign = importlib.import_module(
    f"google.ads.googleads.{VERSION}.services.types.campaign_service"
)
_resources = importlib.import_module(
    f"google.ads.googleads.{VERSION}.resources.types.campaign_budget"
)
_field_mask = importlib.import_module("google.protobuf.field_mask_pb2")


def _budget_request(customer: str, *operations: Any) -> Any:
    return _budget.MutateCampaignBudgetsRequest(customer_id=customer, operations=list(operations))


def _create(name: str) -> Any:
    budget = _resources.CampaignBudget(name=name, amount_micros=1_000_000)
    return _budget.CampaignBudgetOperation(create=budget)


def _codes(error: ApiError) -> list[str]:
    return [p.code for p in error.problems]


@pytest.fixture
def engine() -> MutateEngine:
    return MutateEngine(SandboxState(google_api_version=VERSION))


def test_a_taken_name_is_refused_in_another_request_and_in_the_same(engine: MutateEngine) -> None:
    engine.mutate("campaign_budget", _budget_request("1", _create("b1")))
    with pytest.raises(ApiError) as taken:
        engine.mutate("campaign_budget", _budget_request("1", _create("b1")))
    assert _codes(taken.value) == ["campaign_budget_error.DUPLICATE_NAME"]
    with pytest.raises(ApiError) as twice:
        engine.mutate("campaign_budget", _budget_request("1", _create("b2"), _create("b2")))
    assert _codes(twice.value) == ["campaign_budget_error.DUPLICATE_NAME"]
    # Nothing of the refused request was stored: b2 is still free.
    engine.mutate("campaign_budget", _budget_request("1", _create("b2")))


def test_another_customer_may_use_the_name(engine: MutateEngine) -> None:
    engine.mutate("campaign_budget", _budget_request("1", _create("shared")))
    engine.mutate("campaign_budget", _budget_request("2", _create("shared")))


def test_removing_or_renaming_frees_the_name(engine: MutateEngine) -> None:
    [removed] = engine.mutate("campaign_budget", _budget_request("1", _create("gone")))
    [renamed] = engine.mutate("campaign_budget", _budget_request("1", _create("old")))
    engine.mutate(
        "campaign_budget", _budget_request("1", _budget.CampaignBudgetOperation(remove=removed))
    )
    rename = _budget.CampaignBudgetOperation(
        update=_resources.CampaignBudget(resource_name=renamed, name="new"),
        update_mask=_field_mask.FieldMask(paths=["name"]),
    )
    engine.mutate("campaign_budget", _budget_request("1", rename))
    engine.mutate("campaign_budget", _budget_request("1", _create("gone"), _create("old")))
    with pytest.raises(ApiError) as taken:
        engine.mutate("campaign_budget", _budget_request("1", _create("new")))
    assert _codes(taken.value) == ["campaign_budget_error.DUPLICATE_NAME"]


def test_seeded_campaigns_count_as_taken_and_a_reset_frees_them() -> None:
    state = SandboxState(google_api_version=VERSION)
    engine = MutateEngine(state)
    [seeded_id] = state.seed_campaigns("google", "1", 1)
    seeded = state.google_objects("campaigns")[f"customers/1/campaigns/{seeded_id}"]
    [budget] = engine.mutate("campaign_budget", _budget_request("1", _create("b")))
    campaign = _campaign.CampaignOperation(
        create=type(seeded)(
            name=seeded.name,
            campaign_budget=budget,
            advertising_channel_type="SEARCH",
            contains_eu_political_advertising="DOES_NOT_CONTAIN_EU_POLITICAL_ADVERTISING",
            manual_cpc={},
        )
    )
    request = _campaign.MutateCampaignsRequest(customer_id="1", operations=[campaign])
    with pytest.raises(ApiError) as taken:
        engine.mutate("campaign", request)
    assert "campaign_error.DUPLICATE_CAMPAIGN_NAME" in _codes(taken.value)
    state.reset()
    assert state.google_having("campaigns", "name", seeded.name) == []
