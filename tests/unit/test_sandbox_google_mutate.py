"""The Google sandbox's mutate engine. Duplicate checks, answered from its field index: a
taken name is refused, a removed or renamed object frees its name, another customer's name
is not a conflict, and seeded objects count. GoogleAdsService.Mutate: a tree created in one
request through temporary names, all or nothing, with located errors."""

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
_google_ads = importlib.import_module(
    f"google.ads.googleads.{VERSION}.services.types.google_ads_service"
)


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


def _tree_operations(customer: str, name: str) -> list[Any]:
    """Budget -1, campaign -2 in it, ad group -3 in that, and an ad in the ad group."""
    prefix = f"customers/{customer}"
    budget = {
        "resource_name": f"{prefix}/campaignBudgets/-1",
        "name": name,
        "amount_micros": 1_000_000,
    }
    campaign = {
        "resource_name": f"{prefix}/campaigns/-2",
        "name": name,
        "campaign_budget": f"{prefix}/campaignBudgets/-1",
        "advertising_channel_type": "SEARCH",
        "contains_eu_political_advertising": "DOES_NOT_CONTAIN_EU_POLITICAL_ADVERTISING",
        "manual_cpc": {},
    }
    ad_group = {
        "resource_name": f"{prefix}/adGroups/-3",
        "name": name,
        "campaign": f"{prefix}/campaigns/-2",
    }
    ad = {
        "ad_group": f"{prefix}/adGroups/-3",
        "ad": {
            "final_urls": ["https://jobs.example.com/x"],
            "responsive_search_ad": {
                "headlines": [{"text": t} for t in ("One", "Two", "Three")],
                "descriptions": [{"text": t} for t in ("First", "Second")],
            },
        },
    }
    return [
        _google_ads.MutateOperation(campaign_budget_operation={"create": budget}),
        _google_ads.MutateOperation(campaign_operation={"create": campaign}),
        _google_ads.MutateOperation(ad_group_operation={"create": ad_group}),
        _google_ads.MutateOperation(ad_group_ad_operation={"create": ad}),
    ]


def _google_ads_request(customer: str, operations: list[Any]) -> Any:
    return _google_ads.MutateGoogleAdsRequest(customer_id=customer, mutate_operations=operations)


def _stored(state: SandboxState) -> dict[str, int]:
    return dict(state.stats()["google"])


def test_one_request_creates_a_tree_through_temporary_names() -> None:
    state = SandboxState(google_api_version=VERSION)
    engine = MutateEngine(state)

    results = engine.mutate_google_ads(_google_ads_request("1", _tree_operations("1", "t")))

    assert [resource for resource, _ in results] == [
        "campaign_budget",
        "campaign",
        "ad_group",
        "ad_group_ad",
    ]
    budget, campaign, ad_group, ad = (name for _, name in results)
    assert not any("/-" in name for name in (budget, campaign, ad_group, ad))
    assert state.google_objects("campaigns")[campaign].campaign_budget == budget
    assert state.google_objects("ad_groups")[ad_group].campaign == campaign
    assert state.google_objects("ad_group_ads")[ad].ad_group == ad_group
    assert ad.startswith(f"customers/1/adGroupAds/{ad_group.rsplit('/', 1)[1]}~")
    assert _stored(state) == {
        "campaign_budgets": 1,
        "campaigns": 1,
        "ad_groups": 1,
        "ad_group_ads": 1,
    }


def test_a_failing_operation_leaves_nothing_of_the_request_stored() -> None:
    state = SandboxState(google_api_version=VERSION)
    engine = MutateEngine(state)
    operations = _tree_operations("1", "t")
    operations[3].ad_group_ad_operation.create.ad.responsive_search_ad.headlines.pop()

    with pytest.raises(ApiError) as refused:
        engine.mutate_google_ads(_google_ads_request("1", operations))

    (problem,) = refused.value.problems
    assert problem.code == "collection_size_error.TOO_FEW"
    assert problem.location == (
        ("mutate_operations", 3),
        ("ad_group_ad_operation", None),
        ("create", None),
        ("ad", None),
        ("responsive_search_ad", None),
        ("headlines", None),
    )
    assert set(_stored(state).values()) == {0}
    # Nothing is taken either: the same tree goes through afterwards.
    engine.mutate_google_ads(_google_ads_request("1", _tree_operations("1", "t")))


def test_an_unknown_temporary_name_is_refused_where_it_is_used() -> None:
    state = SandboxState(google_api_version=VERSION)
    engine = MutateEngine(state)
    operations = _tree_operations("1", "t")
    operations[2].ad_group_operation.create.campaign = "customers/1/campaigns/-9"

    with pytest.raises(ApiError) as refused:
        engine.mutate_google_ads(_google_ads_request("1", operations))

    codes = {p.location: p.code for p in refused.value.problems}
    at = (("mutate_operations", 2), ("ad_group_operation", None), ("create", None))
    assert codes[(*at, ("campaign", None))] == "mutate_error.RESOURCE_NOT_FOUND"
    # The ad's reference to the refused ad group (-3) is unknown as well.
    ad_at = (("mutate_operations", 3), ("ad_group_ad_operation", None), ("create", None))
    assert codes[(*ad_at, ("ad_group", None))] == "mutate_error.RESOURCE_NOT_FOUND"
    assert set(_stored(state).values()) == {0}


def test_a_temporary_name_of_the_wrong_resource_is_malformed() -> None:
    engine = MutateEngine(SandboxState(google_api_version=VERSION))
    operations = _tree_operations("1", "t")
    operations[0].campaign_budget_operation.create.resource_name = "customers/1/campaigns/-1"

    with pytest.raises(ApiError) as refused:
        engine.mutate_google_ads(_google_ads_request("1", operations[:1]))

    (problem,) = refused.value.problems
    assert problem.code == "request_error.RESOURCE_NAME_MALFORMED"
    assert problem.location[-1] == ("resource_name", None)
