"""Candidate segmentation, pure ML: features from a DataFrame of candidate profiles, a
preprocessing + KMeans pipeline, the choice of k by silhouette, clustering metrics, and the
fitted pipeline's serialisation. No database, no Kafka.

At scale (docs/architecture.md, "Segmentation at a million"): the preprocessor is fitted on a
sample of `FIT_SAMPLE` rows, k is chosen by KMeans on a sample of `K_SAMPLE` rows scored by
silhouette on `SILHOUETTE_SAMPLE` of them, and the final model is a MiniBatchKMeans over every
row started from that sample's centroids; up to `K_SAMPLE` candidates it is plain KMeans on
all of them, as before. Prediction runs in chunks of `PREDICT_CHUNK` rows."""

from __future__ import annotations

import functools
import io
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.compose import ColumnTransformer
from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (IterativeImputer)
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.impute import IterativeImputer
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

EDUCATION_LEVELS = ("none", "secondary", "vocational", "bachelor", "master", "phd")
EDUCATION_ORDINAL = {level: float(rank) for rank, level in enumerate(EDUCATION_LEVELS)}
PROFILE_COLUMNS = (
    "candidate_id",
    "years_experience",
    "education_level",
    "skills",
    "location",
    "desired_salary",
)
NUMERIC_FEATURES = ["years_experience", "education_level", "skills_count", "desired_salary"]
SKILL_SEPARATOR = "|"
NO_SKILLS = "(none)"
UNKNOWN_LOCATION = "(unknown)"
MAX_CLUSTERS = 8
# Silhouette is quadratic in the samples: score a fixed-size sample beyond this.
SILHOUETTE_SAMPLE = 2000
# Rows the preprocessor (imputer, scaler, encoders) is fitted on, and rows each candidate k is
# clustered on while k is chosen; beyond K_SAMPLE the final fit is a MiniBatchKMeans.
FIT_SAMPLE = 50_000
K_SAMPLE = 20_000
MINIBATCH_SIZE = 8192
PREDICT_CHUNK = 100_000

ProgressCallback = Callable[[int, int], None]


def profiles_frame(profiles: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A DataFrame with one row per candidate profile (the fields of `candidate.upserted`)."""
    rows = [{column: profile.get(column) for column in PROFILE_COLUMNS} for profile in profiles]
    return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))


@functools.lru_cache(maxsize=65_536)
def split_skills(joined: str) -> tuple[str, ...]:
    """The analyzer of the skills vectorizer (module level, so the pipeline pickles; cached,
    since many candidates share a skill set)."""
    return tuple(skill for skill in joined.split(SKILL_SEPARATOR) if skill)


def _skill_list(value: Any) -> list[str]:
    if isinstance(value, str):  # as stored: a JSON list
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if not isinstance(value, list | tuple | np.ndarray):
        return []
    skills = {str(skill).strip().lower() for skill in value}
    return sorted(skill.replace(SKILL_SEPARATOR, " ") for skill in skills if skill)


def _skill_lists(values: pd.Series) -> pd.Series:
    """Each row's normalised skills; stored JSON texts are parsed once per distinct text."""
    try:
        distinct = pd.unique(values)
    except TypeError:  # lists (profiles from events): nothing to share
        return values.map(_skill_list)
    parsed = {value: _skill_list(value) for value in distinct}
    return values.map(parsed)


def prepare_features(profiles: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns: numeric experience, ordinal education, skill count,
    desired salary (NaN when unknown, imputed by the pipeline), normalised location and the
    skills joined into one token string."""
    skills = _skill_lists(profiles["skills"])
    location = profiles["location"].fillna("").astype(str).str.strip().str.lower()
    return pd.DataFrame(
        {
            "years_experience": pd.to_numeric(profiles["years_experience"], errors="coerce"),
            "education_level": profiles["education_level"].map(EDUCATION_ORDINAL).astype(float),
            "skills_count": skills.map(len).astype(float),
            "desired_salary": pd.to_numeric(profiles["desired_salary"], errors="coerce").astype(
                float
            ),
            "location": location.where(location != "", UNKNOWN_LOCATION),
            "skills": skills.map(lambda s: SKILL_SEPARATOR.join(s) if s else NO_SKILLS),
        },
        index=profiles.index,
    )


def build_preprocessor(top_skills: int = 20, top_locations: int = 15) -> ColumnTransformer:
    """Scaled numerics (imputed), one-hot location and one-hot of the top skills."""
    numeric = Pipeline(
        [
            # An unknown salary is predicted from the candidate's experience, education and
            # skill count, not the population median, which would set them apart as a group.
            # (A KNNImputer did this first: 32 s for a million rows with 10 % unknown.)
            ("impute", IterativeImputer(random_state=0)),
            ("scale", StandardScaler()),
        ]
    )
    location = OneHotEncoder(
        handle_unknown="infrequent_if_exist", max_categories=top_locations, sparse_output=False
    )
    skills = CountVectorizer(
        analyzer=split_skills, binary=True, max_features=top_skills, lowercase=False
    )
    return ColumnTransformer(
        [
            ("numeric", numeric, NUMERIC_FEATURES),
            ("location", location, ["location"]),
            ("skills", skills, "skills"),
        ],
        sparse_threshold=0.0,
    )


def evaluate(features: np.ndarray, labels: np.ndarray, inertia: float) -> dict[str, float]:
    """Inertia, plus silhouette, Calinski-Harabasz and Davies-Bouldin where defined
    (2 <= clusters <= samples - 1)."""
    metrics = {"inertia": float(inertia)}
    n_labels = len(np.unique(labels))
    if 2 <= n_labels <= len(labels) - 1:
        metrics["silhouette"] = _silhouette(features, labels)
        metrics["calinski_harabasz"] = float(calinski_harabasz_score(features, labels))
        metrics["davies_bouldin"] = float(davies_bouldin_score(features, labels))
    return metrics


def _silhouette(features: np.ndarray, labels: np.ndarray, random_state: int = 0) -> float:
    sample = SILHOUETTE_SAMPLE if len(labels) > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(features, labels, sample_size=sample, random_state=random_state))


@dataclass
class TrainedModel:
    """A fitted pipeline (preprocessor + KMeans) and how it scored on its training data."""

    pipeline: Pipeline
    n_clusters: int
    n_samples: int
    metrics: dict[str, float]
    labels: np.ndarray
    # Silhouette of each k tried when k was chosen automatically.
    k_scores: dict[int, float] = field(default_factory=dict)
    # Rows the clusterings were fitted on while k was chosen (every row up to K_SAMPLE).
    k_sample: int = 0
    seconds: float = 0.0


def candidate_ks(n_samples: int, n_distinct: int, max_clusters: int = MAX_CLUSTERS) -> list[int]:
    """The k worth trying: 2..max_clusters, fewer than the samples and at most the distinct
    points (silhouette needs at least one cluster with two members)."""
    upper = min(max_clusters, n_samples - 1, n_distinct)
    return list(range(2, upper + 1))


def sample_rows(n_rows: int, size: int, random_state: int) -> np.ndarray:
    """Sorted positions of `size` rows drawn without replacement (all rows when fewer)."""
    if n_rows <= size:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(random_state).choice(n_rows, size, replace=False))


def train(
    profiles: pd.DataFrame,
    n_clusters: int | None = None,
    *,
    random_state: int = 42,
    max_clusters: int = MAX_CLUSTERS,
    progress: ProgressCallback | None = None,
) -> TrainedModel:
    """Fit the segmentation pipeline on candidate profiles. With `n_clusters` None, k is the
    one with the best silhouette among `candidate_ks` (the smaller k on a tie), each k
    clustered on a sample of `K_SAMPLE` rows; beyond that sample the chosen clustering is
    refined by a MiniBatchKMeans over every row."""
    if profiles.empty:
        raise ValueError("no candidate profiles to train on")
    started = time.perf_counter()
    features = prepare_features(profiles)
    preprocessor = build_preprocessor()
    preprocessor.fit(features.iloc[sample_rows(len(features), FIT_SAMPLE, random_state)])
    matrix = _transform(preprocessor, features)
    del features
    n_samples = len(matrix)
    sample = matrix[sample_rows(n_samples, K_SAMPLE, random_state)]
    n_distinct = len(np.unique(sample, axis=0))
    # Small tables get KMeans on every row with the seed's ten starts; big ones three starts
    # on the sample, then the mini-batch pass over everything.
    n_init = 10 if n_samples <= K_SAMPLE else 3

    def fit(k: int) -> KMeans:
        return KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit(sample)

    k_scores: dict[int, float] = {}
    best: KMeans | None = None
    if n_clusters is not None:
        best = fit(max(1, min(n_clusters, n_distinct)))
    else:
        ks = candidate_ks(len(sample), n_distinct, max_clusters)
        for done, k in enumerate(ks, start=1):
            model = fit(k)
            k_scores[k] = _silhouette(sample, model.labels_, random_state)
            if best is None or k_scores[k] > k_scores[best.n_clusters]:
                best = model
            if progress is not None:
                progress(done, len(ks))
        if best is None:  # one or two samples, or all alike: a single segment
            best = fit(1)
    final: KMeans | MiniBatchKMeans = best
    if n_samples > len(sample):
        final = MiniBatchKMeans(
            n_clusters=best.n_clusters,
            init=best.cluster_centers_,
            n_init=1,
            batch_size=MINIBATCH_SIZE,
            random_state=random_state,
        ).fit(matrix)
    labels = np.asarray(final.labels_)
    pipeline = Pipeline([("features", preprocessor), ("kmeans", final)])
    return TrainedModel(
        pipeline=pipeline,
        n_clusters=int(final.n_clusters),
        n_samples=n_samples,
        metrics=evaluate(matrix, labels, float(final.inertia_)),
        labels=labels,
        k_scores=k_scores,
        k_sample=len(sample),
        seconds=time.perf_counter() - started,
    )


def _transform(preprocessor: ColumnTransformer, features: pd.DataFrame) -> np.ndarray:
    """The preprocessed matrix, built chunk by chunk (bounded intermediate copies)."""
    chunks = [
        np.asarray(preprocessor.transform(features.iloc[i : i + PREDICT_CHUNK]), dtype=float)
        for i in range(0, len(features), PREDICT_CHUNK)
    ]
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def predict(pipeline: Pipeline, profiles: pd.DataFrame) -> np.ndarray:
    """The segment of each profile, in row order (in chunks of `PREDICT_CHUNK` rows)."""
    if profiles.empty:
        return np.empty(0, dtype=int)
    features = prepare_features(profiles)
    return np.concatenate(
        [
            np.asarray(pipeline.predict(features.iloc[i : i + PREDICT_CHUNK]), dtype=int)
            for i in range(0, len(features), PREDICT_CHUNK)
        ]
    )


def dump_pipeline(pipeline: Pipeline) -> bytes:
    """Serialise a fitted pipeline (joblib). Only ever loaded from the ML service's own table."""
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer, compress=3)
    return buffer.getvalue()


def load_pipeline(raw: bytes) -> Pipeline:
    pipeline = joblib.load(io.BytesIO(raw))
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"stored model is a {type(pipeline).__name__}, not a Pipeline")
    return pipeline
