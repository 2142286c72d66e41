"""The Meta Marketing API subset AdFlux uses, over HTTP as the `facebook-business` SDK
speaks it (Graph API `v<major>.<minor>`): create, read, update and list campaigns, ad sets,
ad creatives and ads; insights; batch requests; errors shaped like the real ones."""

from __future__ import annotations

import base64
import json
import math
import re
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus, urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from services.sandbox.faults import FaultInjector, FaultRule
from services.sandbox.state import SandboxState

VERSION = re.compile(r"^v\d+\.\d+$")
KINDS = {"campaigns": "campaign", "adsets": "adset", "adcreatives": "adcreative", "ads": "ad"}
OBJECTIVES = {
    "OUTCOME_LEADS",
    "OUTCOME_TRAFFIC",
    "OUTCOME_AWARENESS",
    "OUTCOME_ENGAGEMENT",
    "OUTCOME_SALES",
    "OUTCOME_APP_PROMOTION",
}
STATUSES = {"ACTIVE", "PAUSED", "DELETED", "ARCHIVED"}
DEFAULT_FIELDS = ("id", "name")
# Page sizes of the listing and insights edges (docs/platforms.md, "Page sizes").
DEFAULT_PAGE_LIMIT = 25
MAX_PAGE_LIMIT = 5000


class GraphError(Exception):
    """An error answer: HTTP status plus the Graph API's error object."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        subcode: int | None = None,
        transient: bool = False,
        error_type: str = "OAuthException",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.subcode, self.transient, self.error_type = subcode, transient, error_type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
            "is_transient": self.transient,
            "fbtrace_id": uuid.uuid4().hex[:11],
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        return {"error": error}


def invalid(message: str, subcode: int = 1885183) -> GraphError:
    return GraphError(400, 100, f"(#100) {message}", subcode=subcode)


def throttle_error(rule: FaultRule) -> GraphError:
    """Meta's answer while an ad account is throttled: error 80004 with the usage header (or
    error 17 with Retry-After), stating the time left of the block."""
    if rule.signal == "retry_after":
        return GraphError(
            400,
            17,
            "(#17) User request limit reached",
            subcode=2446079,
            transient=True,
            headers={"Retry-After": str(math.ceil(rule.block_seconds))},
        )
    usage = {
        "0": [
            {
                "type": "ads_management",
                "call_count": 100,
                "total_cputime": 25,
                "total_time": 25,
                "estimated_time_to_regain_access": math.ceil(rule.block_seconds / 60 * 10_000)
                / 10_000,
            }
        ]
    }
    return GraphError(
        400,
        80004,
        "(#80004) There have been too many calls to this ad-account. Wait a bit and try again.",
        subcode=2446079,
        transient=True,
        headers={"x-business-use-case-usage": json.dumps(usage)},
    )


def fault_error(rule: FaultRule) -> GraphError:
    if rule.kind == "throttle":
        return throttle_error(rule)
    if rule.kind == "transient":
        return GraphError(
            500,
            2,
            "An unexpected error has occurred. Please retry your request later.",
            transient=True,
        )
    if rule.kind == "rate_limit":
        usage = {
            "0": [
                {
                    "type": "ads_management",
                    "call_count": 100,
                    "total_cputime": 40,
                    "total_time": 40,
                    "estimated_time_to_regain_access": 1,
                }
            ]
        }
        return GraphError(
            400,
            17,
            "(#17) User request limit reached",
            subcode=2446079,
            transient=True,
            headers={"x-business-use-case-usage": json.dumps(usage), "Retry-After": "1"},
        )
    return invalid("Invalid parameter")


def _decode(value: str) -> Any:
    """Form and query values: lists and objects arrive as JSON strings."""
    stripped = value.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return value
    return value


_RESULT_REFERENCE = re.compile(r"\{result=([^:}]+):\$\.([A-Za-z0-9_]+)\}")


def _resolve(raw: str, results: dict[str, Any]) -> str:
    """Replace `{result=<name>:$.<field>}` in a decoded value with that field of the named
    request's answer; a reference to a failed or unknown request is an error."""

    def value(match: re.Match[str]) -> str:
        answer = results.get(match.group(1))
        if not isinstance(answer, dict) or match.group(2) not in answer:
            raise invalid(f"Cannot resolve {match.group(0)}: no such successful request")
        return str(answer[match.group(2)])

    return _RESULT_REFERENCE.sub(value, raw) if "{result=" in raw else raw


class MetaGraph:
    """The simulated Graph API over the shared sandbox state."""

    def __init__(self, state: SandboxState, faults: FaultInjector) -> None:
        self.state = state
        self.faults = faults

    # --- plumbing ---------------------------------------------------------------------------
    def check(self, operation: str, params: dict[str, Any]) -> None:
        self.state.count_request("meta")
        token = params.get("access_token")
        if not token:
            raise GraphError(400, 104, "An access token is required to request this resource.")
        if token == "expired":
            raise GraphError(
                401, 190, "Error validating access token: Session has expired.", subcode=463
            )
        rule = self.faults.draw("meta", operation)
        if rule is None:
            return
        if rule.kind == "latency":
            time.sleep(rule.latency_ms / 1000)
            return
        raise fault_error(rule)

    def objects(self, kind: str) -> dict[str, Any]:
        return self.state.meta_objects(kind)

    def find(self, object_id: str) -> tuple[str, dict[str, Any]]:
        for kind in KINDS:
            obj = self.objects(kind).get(object_id)
            if obj is not None:
                return kind, obj
        raise GraphError(
            400,
            100,
            f"Unsupported get request. Object with ID '{object_id}' does not "
            "exist, cannot be loaded due to missing permissions, or does not support "
            "this operation",
            subcode=33,
            error_type="GraphMethodException",
        )

    # --- create -------------------------------------------------------------------------------
    def create(self, account: str, edge: str, params: dict[str, Any]) -> dict[str, Any]:
        if edge not in KINDS:
            raise invalid(f"Unsupported post request to edge {edge}", subcode=33)
        self.check(f"create_{KINDS[edge]}", params)
        with self.state.lock:
            fields = getattr(self, f"_validate_{KINDS[edge]}")(account, params)
            object_id = str(self.state.next_id())
            now = datetime.now(UTC).isoformat()
            self.objects(edge)[object_id] = {
                "id": object_id,
                "account_id": account.removeprefix("act_"),
                **fields,
                "created_time": now,
                "updated_time": now,
            }
            self.state.created_at[object_id] = time.monotonic()
        return {"id": object_id}

    @staticmethod
    def _require(params: dict[str, Any], *names: str) -> None:
        for name in names:
            if params.get(name) in (None, ""):
                raise invalid(f"The parameter {name} is required", subcode=1487007)

    def _status(self, params: dict[str, Any]) -> str:
        status = str(params.get("status", "PAUSED"))
        if status not in STATUSES:
            raise invalid(f"Param status must be one of {sorted(STATUSES)}")
        return status

    def _validate_campaign(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        self._require(params, "name", "objective", "special_ad_categories")
        if params["objective"] not in OBJECTIVES:
            raise invalid(f"Param objective must be one of {sorted(OBJECTIVES)}")
        categories = params["special_ad_categories"]
        if not isinstance(categories, list):
            raise invalid("Param special_ad_categories must be an array")
        return {
            "name": params["name"],
            "objective": params["objective"],
            "special_ad_categories": categories,
            "special_ad_category_country": params.get("special_ad_category_country", []),
            "status": self._status(params),
            "effective_status": self._status(params),
        }

    def _validate_adset(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        self._require(
            params, "name", "campaign_id", "billing_event", "optimization_goal", "targeting"
        )
        campaign = self.objects("campaigns").get(str(params["campaign_id"]))
        if campaign is None:
            raise invalid(f"Campaign {params['campaign_id']} does not exist")
        budget = params.get("daily_budget")
        if budget is None or not str(budget).isdigit() or int(budget) < 100:
            raise invalid(
                "Param daily_budget must be an integer of at least 100 (minor units)",
                subcode=1885272,
            )
        targeting = params["targeting"]
        if not isinstance(targeting, dict) or "geo_locations" not in targeting:
            raise invalid("Targeting must include geo_locations", subcode=1885364)
        if "EMPLOYMENT" in campaign["special_ad_categories"] and (
            "age_max" in targeting and int(targeting["age_max"]) < 65
        ):
            raise invalid("Employment ads cannot restrict maximum age", subcode=1885364)
        return {
            "name": params["name"],
            "campaign_id": campaign["id"],
            "daily_budget": str(budget),
            "billing_event": params["billing_event"],
            "optimization_goal": params["optimization_goal"],
            "bid_strategy": params.get("bid_strategy", "LOWEST_COST_WITHOUT_CAP"),
            "targeting": targeting,
            "status": self._status(params),
            "effective_status": self._status(params),
        }

    def _validate_adcreative(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        self._require(params, "name", "object_story_spec")
        spec = params["object_story_spec"]
        if not isinstance(spec, dict) or not spec.get("page_id") or "link_data" not in spec:
            raise invalid("object_story_spec needs page_id and link_data", subcode=1443048)
        return {"name": params["name"], "object_story_spec": spec}

    def _validate_ad(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        self._require(params, "name", "adset_id", "creative")
        adset = self.objects("adsets").get(str(params["adset_id"]))
        if adset is None:
            raise invalid(f"Ad set {params['adset_id']} does not exist")
        creative = params["creative"]
        creative_id = str(creative.get("creative_id")) if isinstance(creative, dict) else ""
        if creative_id not in self.objects("adcreatives"):
            raise invalid(f"Creative {creative_id} does not exist")
        return {
            "name": params["name"],
            "adset_id": adset["id"],
            "campaign_id": adset["campaign_id"],
            "creative": {"id": creative_id},
            "status": self._status(params),
            "effective_status": self._status(params),
        }

    # --- read, update, list -------------------------------------------------------------------
    def read(self, object_id: str, params: dict[str, Any]) -> dict[str, Any]:
        self.check("read", params)
        _kind, obj = self.find(object_id)
        return self.project(obj, params.get("fields"))

    @staticmethod
    def project(obj: dict[str, Any], fields: Any) -> dict[str, Any]:
        wanted = fields.split(",") if isinstance(fields, str) and fields else list(DEFAULT_FIELDS)
        return {name: obj[name] for name in ["id", *wanted] if name in obj}

    def update(self, object_id: str, params: dict[str, Any]) -> dict[str, Any]:
        self.check("update", params)
        with self.state.lock:
            _kind, obj = self.find(object_id)
            if "status" in params:
                obj["status"] = obj["effective_status"] = self._status(params)
            for name in ("name", "daily_budget"):
                if name in params:
                    obj[name] = str(params[name])
            obj["updated_time"] = datetime.now(UTC).isoformat()
        return {"success": True}

    def edge(self, node: str, edge: str, params: dict[str, Any], url: str) -> dict[str, Any]:
        if edge == "insights":
            return self.insights(node, params, url)
        if edge not in KINDS:
            raise invalid(f"Unknown edge {edge}", subcode=33)
        self.check("list", params)
        with self.state.lock:
            rows = [o for o in self.objects(edge).values() if self._under(o, node)]
        rows = [r for r in rows if _matches(r, params.get("filtering"))]
        rows.sort(key=lambda r: int(r["id"]))
        page = self.page([self.project(r, params.get("fields")) for r in rows], params, url)
        if str(params.get("summary", "")).lower() == "true":
            page["summary"] = {"total_count": len(rows)}
        return page

    def _under(self, obj: dict[str, Any], node: str) -> bool:
        if node.startswith("act_"):
            return bool(obj.get("account_id") == node.removeprefix("act_"))
        return node in (obj.get("campaign_id"), obj.get("adset_id"))

    @staticmethod
    def page(rows: list[dict[str, Any]], params: dict[str, Any], url: str) -> dict[str, Any]:
        try:
            limit = int(params.get("limit", DEFAULT_PAGE_LIMIT))
        except (TypeError, ValueError) as exc:
            raise invalid("Param limit must be an integer") from exc
        if not 1 <= limit <= MAX_PAGE_LIMIT:
            # Stricter than Meta, which may serve a shorter page: asking for more than the
            # page size we rely on must fail a test, not pass unnoticed.
            raise invalid(f"Param limit must be a number between 1 and {MAX_PAGE_LIMIT}")
        try:
            start = int(base64.b64decode(params["after"]).decode()) if params.get("after") else 0
        except (TypeError, ValueError) as exc:  # a JSON `after` arrives decoded: not a cursor
            raise invalid("Param after must be a cursor from paging") from exc
        if start < 0:
            raise invalid("Param after must be a cursor from paging")
        chunk = rows[start : start + limit]
        after = base64.b64encode(str(start + len(chunk)).encode()).decode()
        paging: dict[str, Any] = {
            "cursors": {"before": base64.b64encode(str(start).encode()).decode(), "after": after}
        }
        if start + limit < len(rows):
            query = {
                k: (json.dumps(v) if isinstance(v, list | dict) else v) for k, v in params.items()
            }
            paging["next"] = f"{url}?{urlencode({**query, 'after': after})}"
        return {"data": chunk, "paging": paging}

    def insights(self, node: str, params: dict[str, Any], url: str) -> dict[str, Any]:
        self.check("insights", params)
        level = params.get("level", "campaign" if not node.startswith("act_") else "account")
        with self.state.lock:
            if node.startswith("act_"):
                campaigns = [c for c in self.objects("campaigns").values() if self._under(c, node)]
            else:
                kind, obj = self.find(node)
                campaigns = (
                    [obj]
                    if kind == "campaigns"
                    else [self.objects("campaigns")[obj["campaign_id"]]]
                )
        campaigns = [
            c for c in campaigns if _matches(c, params.get("filtering"), prefix="campaign.")
        ]
        since, until = _time_range(params.get("time_range"))
        rows = []
        for campaign in sorted(campaigns, key=lambda c: int(c["id"])):
            metrics = self.state.metrics_for(campaign["id"], self.state.age_of(campaign["id"]))
            row = {
                "impressions": str(metrics.impressions),
                "clicks": str(metrics.clicks),
                "spend": f"{metrics.spend:.2f}",
                "actions": [{"action_type": "lead", "value": str(int(metrics.conversions))}],
                "date_start": since.isoformat(),
                "date_stop": until.isoformat(),
            }
            if level == "campaign":
                row |= {"campaign_id": campaign["id"], "campaign_name": campaign["name"]}
            rows.append(row)
        return self.page(rows, params, url)

    def batch(self, params: dict[str, Any], version: str) -> list[dict[str, Any] | None]:
        """Run up to 50 requests in order. A request may be `name`d and later ones may use
        its answer as `{result=<name>:$.<field>}` in their URL or body; a request that uses
        (or `depends_on`) a failed one fails too. A named request's answer is omitted (null)
        on success unless it sets `omit_response_on_success` to false, as the Graph API does."""
        self.check("batch", params)
        requests = params.get("batch")
        if not isinstance(requests, list) or not requests or len(requests) > 50:
            raise invalid("batch must be a list of 1 to 50 requests")
        token = params["access_token"]
        answers: list[dict[str, Any] | None] = []
        results: dict[str, Any] = {}  # name -> answer body, or None when the request failed
        for item in requests:
            name = item.get("name")
            try:
                depends = item.get("depends_on")
                if depends is not None and results.get(str(depends)) is None:
                    raise invalid(f"This request depends on {depends!r}, which did not succeed")
                method = str(item.get("method", "GET")).upper()
                relative = str(item.get("relative_url", "")).lstrip("/")
                path, _, query = relative.partition("?")
                path = _resolve(unquote_plus(path), results)
                sub: dict[str, Any] = {"access_token": token}
                for raw in (query, str(item.get("body", ""))):
                    for pair in filter(None, raw.split("&")):
                        key, _, value = pair.partition("=")
                        sub[key] = _decode(_resolve(unquote_plus(value), results))
                body = self.dispatch(method, path.strip("/").split("/"), sub, f"/{version}/{path}")
            except GraphError as exc:
                if name is not None:
                    results[str(name)] = None
                headers = [{"name": k, "value": v} for k, v in exc.headers.items()]
                answers.append(
                    {"code": exc.status, "headers": headers, "body": json.dumps(exc.body())}
                )
                continue
            if name is not None:
                results[str(name)] = body
                if item.get("omit_response_on_success", True) is not False:
                    answers.append(None)
                    continue
            answers.append({"code": 200, "headers": [], "body": json.dumps(body)})
        return answers

    def dispatch(self, method: str, parts: list[str], params: dict[str, Any], url: str) -> Any:
        if method == "POST" and len(parts) == 2:
            return self.create(parts[0], parts[1], params)
        if method == "POST" and len(parts) == 1:
            return self.update(parts[0], params)
        if method == "GET" and len(parts) == 2:
            return self.edge(parts[0], parts[1], params, url)
        if method == "GET" and len(parts) == 1:
            return self.read(parts[0], params)
        raise invalid(f"Unsupported {method} request", subcode=33)


def _matches(obj: dict[str, Any], filtering: Any, prefix: str = "") -> bool:
    """Graph API `filtering`: [{field, operator: EQUAL|IN|CONTAIN|NOT_IN, value}]."""
    if not filtering:
        return True
    for rule in filtering if isinstance(filtering, list) else []:
        field = str(rule.get("field", "")).removeprefix(prefix).removeprefix("campaign.")
        actual = str(obj.get(field, ""))
        operator, value = str(rule.get("operator", "EQUAL")).upper(), rule.get("value")
        if operator == "EQUAL" and actual != str(value):
            return False
        if operator == "IN" and actual not in {str(v) for v in value or []}:
            return False
        if operator == "NOT_IN" and actual in {str(v) for v in value or []}:
            return False
        if operator == "CONTAIN" and str(value) not in actual:
            return False
    return True


def _time_range(raw: Any) -> tuple[date, date]:
    today = datetime.now(UTC).date()
    if isinstance(raw, dict) and raw.get("since") and raw.get("until"):
        try:
            return date.fromisoformat(raw["since"]), date.fromisoformat(raw["until"])
        except ValueError as exc:
            raise invalid("time_range must have since and until as YYYY-MM-DD") from exc
    return today - timedelta(days=7), today


def meta_router(state: SandboxState, faults: FaultInjector) -> APIRouter:
    """The Graph API routes: every `/<version>/...` path."""
    graph = MetaGraph(state, faults)
    app = APIRouter()

    async def params_of(request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {k: _decode(v) for k, v in request.query_params.items()}
        if request.method == "POST":
            form = await request.form()
            params.update({k: _decode(str(v)) for k, v in form.items()})
        return params

    @app.api_route("/{version}/{path:path}", methods=["GET", "POST"], include_in_schema=False)
    async def graph_call(version: str, path: str, request: Request) -> JSONResponse:
        if not VERSION.match(version):
            return JSONResponse(
                {"error": {"message": f"Unknown path {version}", "code": 2500}}, 400
            )
        params = await params_of(request)
        parts = [p for p in path.split("/") if p]
        url = str(request.url).split("?")[0]
        # A latency fault sleeps and must delay only its own call: off the event loop then.
        # Otherwise the answer is a few dictionary operations, done here without a thread hop.
        if faults.may_delay("meta"):
            return await run_in_threadpool(answer, request.method, parts, params, url, version)
        return answer(request.method, parts, params, url, version)

    def answer(
        method: str, parts: list[str], params: dict[str, Any], url: str, version: str
    ) -> JSONResponse:
        try:
            if not parts and method == "POST":
                return JSONResponse(graph.batch(params, version))
            return JSONResponse(graph.dispatch(method, parts, params, url))
        except GraphError as exc:
            return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    return app
