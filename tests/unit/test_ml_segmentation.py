"""Candidate segmentation as pure ML: features, the choice of k, metrics, determinism and the
round trip of a stored pipeline, on synthetic candidates."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from services.ml import segmentation

# Three kinds of candidate, far apart in every feature.
ARCHETYPES: tuple[dict[str, Any], ...] = (
    {
        "years_experience": 1.0,
        "education_level": "secondary",
        "skills": ["excel", "sales", "customer service"],
        "location": "Madrid",
        "desired_salary": 22000.0,
    },
    {
        "years_experience": 7.0,
        "education_level": "master",
        "skills": ["python", "sql", "machine learning", "docker"],
        "location": "Barcelona",
        "desired_salary": 55000.0,
    },
    {
        "years_experience": 20.0,
        "education_level": "phd",
        "skills": ["leadership", "strategy"],
        "location": "London",
        "desired_salary": 130000.0,
    },
)


def synthetic_profiles(per_group: int = 30, seed: int = 7) -> list[dict[str, Any]]:
    """Candidates around the archetypes: noisy experience and salary, some salaries unknown.
    Ids are `g<archetype>-<n>`, so the true group can be read back."""
    rng = np.random.default_rng(seed)
    profiles = []
    for group, archetype in enumerate(ARCHETYPES):
        for n in range(per_group):
            salary = archetype["desired_salary"] * (1 + rng.normal(0, 0.05))
            profiles.append(
                {
                    **archetype,
                    "candidate_id": f"g{group}-{n}",
                    "years_experience": max(0.0, archetype["years_experience"] + rng.normal(0, 1)),
                    "desired_salary": None if n % 5 == 0 else round(salary, 2),
                }
            )
    return profiles


def true_groups(frame: pd.DataFrame) -> list[str]:
    return [cid.split("-")[0] for cid in frame["candidate_id"]]


@pytest.fixture
def profiles() -> pd.DataFrame:
    return segmentation.profiles_frame(synthetic_profiles())


def test_distinct_synthetic_clusters_are_recovered(profiles: pd.DataFrame) -> None:
    trained = segmentation.train(profiles)
    assert trained.n_clusters == 3
    assert adjusted_rand_score(true_groups(profiles), trained.labels) == 1.0


def test_k_is_the_one_with_the_best_silhouette(profiles: pd.DataFrame) -> None:
    trained = segmentation.train(profiles)
    assert sorted(trained.k_scores) == list(range(2, 9))
    assert trained.n_clusters == max(trained.k_scores, key=lambda k: trained.k_scores[k])
    assert trained.metrics["silhouette"] == pytest.approx(trained.k_scores[3])


def test_k_is_bounded_by_the_number_of_samples() -> None:
    assert segmentation.candidate_ks(5, 5) == [2, 3, 4]
    assert segmentation.candidate_ks(100, 3) == [2, 3]
    assert segmentation.candidate_ks(2, 2) == []
    few = segmentation.profiles_frame(synthetic_profiles(per_group=2))
    trained = segmentation.train(few)
    assert sorted(trained.k_scores) == [2, 3, 4, 5]
    single = segmentation.train(few.head(1))
    assert single.n_clusters == 1
    assert single.metrics.keys() == {"inertia"}  # the others need two clusters


def test_an_explicit_number_of_clusters_is_used(profiles: pd.DataFrame) -> None:
    trained = segmentation.train(profiles, n_clusters=5)
    assert trained.n_clusters == 5
    assert trained.k_scores == {}
    assert len(set(trained.labels)) == 5


def test_metrics_include_every_clustering_score(profiles: pd.DataFrame) -> None:
    metrics = segmentation.train(profiles).metrics
    assert metrics.keys() == {"silhouette", "calinski_harabasz", "davies_bouldin", "inertia"}
    assert 0.5 < metrics["silhouette"] <= 1.0
    assert metrics["calinski_harabasz"] > 0
    assert metrics["davies_bouldin"] >= 0
    assert metrics["inertia"] >= 0


def test_training_is_deterministic_with_the_same_random_state(profiles: pd.DataFrame) -> None:
    first = segmentation.train(profiles, random_state=3)
    second = segmentation.train(profiles, random_state=3)
    assert np.array_equal(first.labels, second.labels)
    assert first.metrics == second.metrics
    centers = first.pipeline.named_steps["kmeans"].cluster_centers_
    assert np.array_equal(centers, second.pipeline.named_steps["kmeans"].cluster_centers_)


def test_a_stored_pipeline_predicts_the_same_after_loading(profiles: pd.DataFrame) -> None:
    trained = segmentation.train(profiles)
    raw = segmentation.dump_pipeline(trained.pipeline)
    assert isinstance(raw, bytes)
    loaded = segmentation.load_pipeline(raw)
    assert np.array_equal(segmentation.predict(loaded, profiles), trained.labels)


def test_features_are_ordinal_counted_imputed_and_normalised() -> None:
    frame = segmentation.profiles_frame(
        [
            {
                "candidate_id": "a",
                "years_experience": 3,
                "education_level": "bachelor",
                "skills": [" Python", "python", "SQL|DB"],
                "location": "  Madrid ",
                "desired_salary": None,
            },
            {
                "candidate_id": "b",
                "years_experience": 0,
                "education_level": "none",
                "skills": [],
                "location": "",
                "desired_salary": 1000,
            },
        ]
    )
    features = segmentation.prepare_features(frame)
    assert features["education_level"].tolist() == [3.0, 0.0]
    assert features["skills_count"].tolist() == [2.0, 0.0]
    assert features["skills"].tolist() == ["python|sql db", segmentation.NO_SKILLS]
    assert features["location"].tolist() == ["madrid", segmentation.UNKNOWN_LOCATION]
    assert np.isnan(features["desired_salary"].iloc[0])


def test_profiles_unlike_the_training_data_still_get_a_segment(profiles: pd.DataFrame) -> None:
    trained = segmentation.train(profiles)
    unseen = segmentation.profiles_frame(
        [
            {
                "candidate_id": "new",
                "years_experience": 19,
                "education_level": "phd",
                "skills": ["leadership", "quantum computing"],
                "location": "Tokyo",
                "desired_salary": None,
            }
        ]
    )
    [segment] = segmentation.predict(trained.pipeline, unseen)
    phd_segment = trained.labels[true_groups(profiles).index("g2")]
    assert segment == phd_segment


def test_training_on_no_profiles_is_refused() -> None:
    with pytest.raises(ValueError, match="no candidate profiles"):
        segmentation.train(segmentation.profiles_frame([]))
