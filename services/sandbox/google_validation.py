"""What the Google sandbox refuses on create, as the real API does: each resource's check
yields (error code, message, dotted field path in the object) per finding. Checks read the
objects as the request sees them (`Staging`: stored, with the request's earlier operations
over them), so a parent created earlier in the same request exists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from services.sandbox.google_resources import PARENTS

if TYPE_CHECKING:
    from services.sandbox.google_mutate import Siblings, Staging

# A validation finding: (error code, message, dotted field path inside the checked object).
Check = tuple[str, str, str]
# A resource's check: (the request's view, customer id, the new object, its live siblings)
# -> findings.
Checker = Callable[["Staging", str, Any, "Siblings"], Iterator[Check]]

_MAX_HEADLINE_LENGTH = 30
_MAX_DESCRIPTION_LENGTH = 90


def _check_parent(view: Staging, resource: str, customer: str, obj: Any) -> Iterator[Check]:
    parent, link = PARENTS[resource]
    name = getattr(obj, link)
    if not name:
        yield "field_error.REQUIRED", f"The {link} is required.", link
    elif view.get(parent, name) is None or not name.startswith(f"customers/{customer}/"):
        yield "mutate_error.RESOURCE_NOT_FOUND", f"{name!r} does not exist.", link


def _check_budget(view: Staging, customer: str, budget: Any, siblings: Siblings) -> Iterator[Check]:
    if not budget.name:
        yield "field_error.REQUIRED", "A budget needs a name.", "name"
    elif siblings.having("name", budget.name):
        yield "campaign_budget_error.DUPLICATE_NAME", "The budget name is taken.", "name"
    if budget.amount_micros <= 0:
        yield "field_error.REQUIRED", "A budget needs a positive amount.", "amount_micros"


def _check_campaign(
    view: Staging, customer: str, campaign: Any, siblings: Siblings
) -> Iterator[Check]:
    if not campaign.name:
        yield "field_error.REQUIRED", "A campaign needs a name.", "name"
    elif siblings.having("name", campaign.name):
        yield "campaign_error.DUPLICATE_CAMPAIGN_NAME", "The campaign name is taken.", "name"
    if not campaign.advertising_channel_type:
        yield (
            "field_error.REQUIRED",
            "Set advertising_channel_type.",
            "advertising_channel_type",
        )
    if not campaign.contains_eu_political_advertising:
        yield (
            "mutate_error.EU_POLITICAL_ADVERTISING_DECLARATION_REQUIRED",
            "Declare whether the campaign contains EU political advertising.",
            "contains_eu_political_advertising",
        )
    if type(campaign).pb(campaign).WhichOneof("campaign_bidding_strategy") is None:
        yield "field_error.REQUIRED", "A campaign needs a bidding strategy.", ""
    yield from _check_parent(view, "campaign", customer, campaign)
    budget = view.get("campaign_budget", campaign.campaign_budget)
    if (
        budget is not None
        and not budget.explicitly_shared
        and siblings.having("campaign_budget", budget.resource_name)
    ):
        yield (
            "campaign_budget_error.CANNOT_USE_IMPLICITLY_SHARED_CAMPAIGN_BUDGET_WITH_MULTIPLE_CAMPAIGNS",
            "The budget is not shared and already has a campaign.",
            "campaign_budget",
        )


def _check_ad_group(
    view: Staging, customer: str, ad_group: Any, siblings: Siblings
) -> Iterator[Check]:
    if not ad_group.name:
        yield "field_error.REQUIRED", "An ad group needs a name.", "name"
    elif any(
        other.campaign == ad_group.campaign for other in siblings.having("name", ad_group.name)
    ):
        yield "ad_group_error.DUPLICATE_ADGROUP_NAME", "The ad group name is taken.", "name"
    yield from _check_parent(view, "ad_group", customer, ad_group)


def _check_ad_group_ad(
    view: Staging, customer: str, ad: Any, siblings: Siblings
) -> Iterator[Check]:
    yield from _check_parent(view, "ad_group_ad", customer, ad)
    rsa = ad.ad.responsive_search_ad
    path = "ad.responsive_search_ad"
    for kind, texts, minimum, maximum, max_length in (
        ("headlines", rsa.headlines, 3, 15, _MAX_HEADLINE_LENGTH),
        ("descriptions", rsa.descriptions, 2, 4, _MAX_DESCRIPTION_LENGTH),
    ):
        if len(texts) < minimum:
            yield (
                "collection_size_error.TOO_FEW",
                f"At least {minimum} {kind}.",
                f"{path}.{kind}",
            )
        if len(texts) > maximum:
            yield (
                "collection_size_error.TOO_MANY",
                f"At most {maximum} {kind}.",
                f"{path}.{kind}",
            )
        for asset in texts:
            if not asset.text:
                yield "string_length_error.EMPTY", f"Empty text in {kind}.", f"{path}.{kind}"
            elif len(asset.text) > max_length:
                yield (
                    "string_length_error.TOO_LONG",
                    f"{asset.text!r} is longer than {max_length} characters.",
                    f"{path}.{kind}",
                )
    if not ad.ad.final_urls:
        yield "field_error.REQUIRED", "An ad needs a final URL.", "ad.final_urls"


CHECKS: dict[str, Checker] = {
    "campaign_budget": _check_budget,
    "campaign": _check_campaign,
    "ad_group": _check_ad_group,
    "ad_group_ad": _check_ad_group_ad,
}
