"""The gateway's bulk candidate intake, in-process: a JSON list, the wrapped form and NDJSON
each become `candidate.batch_upserted` records in the outbox (in order, each within the
broker's record size); the cap is a 413, a bad item or line a 422 naming it, and a refused
request adds nothing to the outbox. Also the projection of batch segment assignments behind
GET /segments."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from bench.candidates_scale import synthetic_profiles
from services.gateway.candidates import MAX_CANDIDATES, segments_assigned
from shared.envelope import from_kafka, new_event
from shared.events import CandidateSegmentsAssigned, CandidatesUpserted, CandidateUpserted
from shared.outbox import MAX_RECORD_BYTES
from shared.runtime import HandlerContext
from shared.tasks import TaskStatusReporter
from shared.topics import TopicNames
from tests.support.gateway import InProcessGateway, in_process_gateway

NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[InProcessGateway]:
    yield from in_process_gateway(tmp_path)


def queued(gw: InProcessGateway) -> dict[str, CandidateUpserted]:
    """The profiles waiting in the outbox, by candidate id, in order (each record checked
    against its key and the record size limit)."""
    profiles = {}
    for row in gw.outbox_rows():
        headers = [(k, v.encode("latin-1")) for k, v in row.headers]
        envelope = from_kafka(row.key, row.value, headers)
        batch = envelope.payload()
        assert isinstance(batch, CandidatesUpserted)
        assert row.topic == "unit.candidate.batch_upserted"
        assert row.key == batch.candidates[0].candidate_id.encode() == envelope.subject.encode()
        assert len(row.value) <= MAX_RECORD_BYTES
        for profile in batch.candidates:
            profiles[profile.candidate_id] = profile
    return profiles


def test_big_profiles_are_cut_into_records_the_broker_takes_keeping_their_order(
    gw: InProcessGateway,
) -> None:
    profiles = synthetic_profiles(600, seed=7)
    for profile in profiles:  # ~10 kB each: several records
        profile["skills"] = [
            f"{profile['candidate_id']}-skill-{i:03d}-" + "x" * 80 for i in range(100)
        ]
    response = gw.client.post("/api/v1/candidates", json=profiles)
    assert response.status_code == 202, response.text
    assert len(gw.outbox_rows()) > 1
    assert list(queued(gw)) == [p["candidate_id"] for p in profiles]


def ndjson(profiles: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(p).encode() + b"\n" for p in profiles)


def test_a_json_list_becomes_batches_holding_every_candidate(gw: InProcessGateway) -> None:
    profiles = synthetic_profiles(300, seed=1)
    response = gw.client.post("/api/v1/candidates", json=profiles)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 300}
    stored = queued(gw)
    assert set(stored) == {p["candidate_id"] for p in profiles}
    sample = profiles[17]
    assert stored[sample["candidate_id"]].skills == sample["skills"]
    assert stored[sample["candidate_id"]].desired_salary == sample["desired_salary"]


def test_the_wrapped_form_is_still_accepted(gw: InProcessGateway) -> None:
    profiles = synthetic_profiles(5, seed=2)
    response = gw.client.post("/api/v1/candidates", json={"candidates": profiles})
    assert response.status_code == 202, response.text
    assert set(queued(gw)) == {p["candidate_id"] for p in profiles}


def test_ndjson_takes_one_profile_per_line_and_skips_blank_lines(gw: InProcessGateway) -> None:
    profiles = synthetic_profiles(1000, seed=3)
    body = ndjson(profiles[:500]) + b"\n  \n" + ndjson(profiles[500:])
    response = gw.client.post("/api/v1/candidates", content=body, headers=NDJSON)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1000}
    assert set(queued(gw)) == {p["candidate_id"] for p in profiles}


def test_a_bad_ndjson_line_is_422_naming_line_and_field(gw: InProcessGateway) -> None:
    profiles = synthetic_profiles(10, seed=4)
    profiles[6] = {**profiles[6], "years_experience": -3}
    lines = ndjson(profiles).split(b"\n")
    lines[2] = b'{"candidate_id": "broken"'  # line 3: not JSON
    response = gw.client.post("/api/v1/candidates", content=b"\n".join(lines), headers=NDJSON)
    assert response.status_code == 422, response.text
    where = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert ("body", "line 3") in where
    assert ("body", "line 7", "years_experience") in where
    assert gw.outbox_rows() == []


def test_a_bad_item_of_a_json_list_is_422_naming_index_and_field(gw: InProcessGateway) -> None:
    profiles = synthetic_profiles(4, seed=5)
    profiles[2] = {**profiles[2], "education_level": "wizard"}
    response = gw.client.post("/api/v1/candidates", json=profiles)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", 2, "education_level"]
    unstorable = [{**profiles[0], "location": "Ma\u0000drid"}]
    response = gw.client.post("/api/v1/candidates", json=unstorable)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", 0, "location"]
    for body in (b"{not json", b"[]", b'{"profiles": []}', b"42"):
        response = gw.client.post(
            "/api/v1/candidates", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, body
    assert gw.client.post("/api/v1/candidates", content=b"\n\n", headers=NDJSON).status_code == 422
    assert gw.outbox_rows() == []


def test_more_than_the_cap_is_413_and_the_cap_itself_is_accepted(gw: InProcessGateway) -> None:
    profiles = synthetic_profiles(MAX_CANDIDATES + 1, seed=6)
    over = gw.client.post("/api/v1/candidates", content=ndjson(profiles), headers=NDJSON)
    assert over.status_code == 413
    assert str(MAX_CANDIDATES) in over.json()["detail"]
    assert gw.client.post("/api/v1/candidates", json=profiles).status_code == 413
    assert gw.outbox_rows() == []
    full = gw.client.post("/api/v1/candidates", json=profiles[:MAX_CANDIDATES])
    assert full.status_code == 202, full.text
    assert len(queued(gw)) == MAX_CANDIDATES


def test_candidates_need_the_ml_write_scope(gw: InProcessGateway) -> None:
    response = gw.client.post(
        "/api/v1/candidates",
        json=synthetic_profiles(1),
        headers={"Authorization": "Bearer unit-test-reader-token"},
    )
    assert response.status_code == 403
    assert gw.outbox_rows() == []


def test_batch_segments_are_projected_for_get_segments(gw: InProcessGateway) -> None:
    def project(segments: dict[str, int], version: str) -> None:
        event = CandidateSegmentsAssigned(model_version=version, segments=segments, part=1, parts=1)
        envelope = new_event(event, source="ml", subject=f"{version}/1")
        with gw.db.session() as session:
            reporter = TaskStatusReporter(TopicNames("unit."), "gateway")
            ctx = HandlerContext(envelope, session, reporter, cast(Any, None), None)
            segments_assigned(envelope, event, ctx)

    project({f"c{i}": i % 3 for i in range(30)}, "v1")
    project({"c0": 2, "c31": 1}, "v2")  # a later assignment overwrites and adds
    assert gw.client.get("/api/v1/segments/c0").json() == {
        "candidate_id": "c0",
        "segment": 2,
        "model_version": "v2",
    }
    assert gw.client.get("/api/v1/segments/c4").json()["segment"] == 1
    counts = {
        (s["segment"], s["model_version"]): s["candidates"]
        for s in gw.client.get("/api/v1/segments").json()
    }
    assert sum(counts.values()) == 31 and counts[(1, "v2")] == 1
