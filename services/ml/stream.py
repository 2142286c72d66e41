"""Online segment assignment (docs/architecture.md): a faust agent on `candidate.upserted` applies
the current model to every new or changed candidate and emits `candidate.segmented`.

Its output can be recomputed (`ml.assign_segments` redoes it for everyone), so it runs on
faust in its own consumer group rather than on the command runtime: a batch that keeps failing
is left to the next batch assignment instead of going to a retry tier or the dead letters. It
shares the runtime's decoding (`from_kafka`) and dedupe (`ProcessedEventStore`, under its own
group), and the lifecycle of every background component (`BackgroundLoop`). The agent keeps
`concurrency=1` (faust 0.15.3 can commit past an in-flight record with more, faust #606).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import aiokafka.codec
import faust
import sqlalchemy as sa
from confluent_kafka import KafkaException
from prometheus_client import Counter
from sklearn.pipeline import Pipeline
from sqlalchemy.orm import Session

from services.ml import segmentation
from services.ml.models import SegmentationModel, latest_version, store_segments
from shared.background import BackgroundLoop
from shared.db import Database
from shared.envelope import Envelope, MalformedEvent, from_kafka, new_event
from shared.events import CandidateSegmented, CandidateUpserted
from shared.producer import DeliveryFailed, EventProducer, OutgoingRecord
from shared.runtime.processed import ProcessedEventStore
from shared.topics import TopicNames

log = logging.getLogger(__name__)

SOURCE = "ml"
ONLINE_GROUP = "ml.online"
ONLINE_ASSIGNMENTS = Counter(
    "adflux_ml_online_assignments_total",
    "Candidates seen by the online segment assignment, by outcome.",
    ["outcome"],
)
# Errors of our broker or database: the record is tried again a few times before it is left
# to the next batch assignment (the output is recomputable, the stream must go on).
INFRASTRUCTURE_ERRORS = (
    sa.exc.OperationalError,
    sa.exc.IntegrityError,  # a concurrent batch assignment inserted the same segment row
    KafkaException,
    DeliveryFailed,
)
ATTEMPTS = 3
# Records per batch, and how long a batch waits to fill (the latency bound of a lone upsert).
BATCH_SIZE = 200
BATCH_WITHIN = 0.02
# Event ids of online assignments are derived from their cause and model, so a reprocessed
# record yields the same event id and downstream consumers skip it.
ONLINE_EVENT_NAMESPACE = uuid.UUID("5f0c6a8e-7d0e-4c36-9a51-3f1f2d0b6a11")
# Seconds between purges of the group's tracking rows older than the retention.
PURGE_INTERVAL = 600.0
# Called inside an assignment's transaction with each upsert and the event it yields.
Tracker = Callable[[Session, list[tuple[Envelope, Envelope]]], None]


class OnlineAssigner:
    """Applies the current model to candidate profiles. The fitted pipeline is cached and
    reloaded when a newer model version is stored."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cached: tuple[str, Pipeline] | None = None
        self._lock = threading.Lock()

    def current_model(self, session: Session) -> tuple[str, Pipeline] | None:
        version = latest_version(session)
        if version is None:
            return None
        with self._lock:
            if self._cached is None or self._cached[0] != version:
                model = session.get(SegmentationModel, version)
                assert model is not None
                self._cached = (version, segmentation.load_pipeline(model.pipeline))
                log.info("online assignment uses model %s", version)
            return self._cached

    def assign(self, envelope: Envelope) -> Envelope | None:
        """The `candidate.segmented` event for one upsert, or None while no model exists."""
        assigned = self.assign_batch([envelope])
        return assigned[0] if assigned else None

    def assign_batch(
        self, envelopes: list[Envelope], track: Tracker | None = None
    ) -> list[Envelope]:
        """`candidate.segmented` events for these upserts, in order (none while no model
        exists), with one prediction and one transaction for the batch; `track` records them
        in that transaction."""
        profiles: list[tuple[Envelope, CandidateUpserted]] = []
        for envelope in envelopes:
            profile = envelope.payload()  # MalformedEvent on a schema violation
            if not isinstance(profile, CandidateUpserted):
                raise MalformedEvent(f"expected candidate.upserted, got {envelope.type}")
            profiles.append((envelope, profile))
        if not profiles:
            return []
        with self.db.session() as session:
            current = self.current_model(session)
            if current is None:
                return []
            version, pipeline = current
            frame = segmentation.profiles_frame(p.model_dump() for _, p in profiles)
            segments = [int(s) for s in segmentation.predict(pipeline, frame)]
            ids = [profile.candidate_id for _, profile in profiles]
            store_segments(session, zip(ids, segments, strict=True), version, every=False)
            assigned = [
                new_event(
                    CandidateSegmented(
                        candidate_id=profile.candidate_id, segment=segment, model_version=version
                    ),
                    source=SOURCE,
                    subject=profile.candidate_id,
                    correlationid=envelope.correlationid or envelope.id,
                    causationid=envelope.id,
                    event_id=str(uuid.uuid5(ONLINE_EVENT_NAMESPACE, f"{envelope.id}/{version}")),
                )
                for (envelope, profile), segment in zip(profiles, segments, strict=True)
            ]
            if track is not None:
                track(session, [(e, a) for (e, _), a in zip(profiles, assigned, strict=True)])
        return assigned


class OnlineSegmentation(BackgroundLoop):
    """The faust app and its agent, run on an asyncio loop in their own thread so the
    service's main thread keeps signal handling; `stop()` shuts faust down cleanly."""

    thread_name = "ml-online"

    def __init__(
        self,
        *,
        bootstrap: str,
        names: TopicNames,
        data_dir: str,
        assigner: OnlineAssigner,
        producer: EventProducer,
        db: Database,
        processed: sa.Table,
        retention: timedelta,
    ) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.names = names
        self.data_dir = data_dir
        self.assigner = assigner
        self.producer = producer
        self.group = names.group(ONLINE_GROUP)
        self.processed = ProcessedEventStore(db, processed, self.group)
        self.retention = retention
        self.assigned = threading.Event()
        self._started = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------
    def ready(self) -> bool:
        return self._started.is_set() and self.healthy()

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(loop))
        except Exception:
            log.exception("online segment assignment crashed")
            raise
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        app = self.build_app(loop)
        await app.start()
        self._started.set()
        log.info("online segment assignment consuming as %s", self.group)
        last_purge = time.monotonic()
        try:
            # Polled, so a stop requested while faust was still starting is not missed.
            while not self._stop.is_set():
                if app.crashed:
                    log.error("faust app crashed: %r", app.crash_reason)
                    return  # the thread ends, so `healthy` turns false and /readyz says so
                if time.monotonic() - last_purge >= PURGE_INTERVAL:
                    last_purge = time.monotonic()
                    await asyncio.to_thread(self.purge)
                await asyncio.sleep(0.2)
        finally:
            await app.stop()
            log.info("online segment assignment stopped")

    def purge(self) -> None:
        """Forget upserts handled longer ago than the retention (never raises)."""
        try:
            purged = self.processed.purge(self.retention)
        except INFRASTRUCTURE_ERRORS as exc:
            log.warning("purging the tracking rows of %s failed: %s", self.group, exc)
            return
        if purged:
            log.info("purged %d tracking rows of %s", purged, self.group)

    # --- faust ----------------------------------------------------------------------------
    def build_app(self, loop: asyncio.AbstractEventLoop) -> faust.App:
        if not aiokafka.codec.has_lz4():
            # Our producer compresses with lz4; without cramjam aiokafka's fetcher crashes.
            raise RuntimeError("aiokafka cannot read lz4 batches: install aiokafka[lz4]")
        datadir = Path(self.data_dir) / "faust"  # faust writes nothing there with memory://
        datadir.mkdir(parents=True, exist_ok=True)
        app = faust.App(
            self.group,
            broker=f"kafka://{self.bootstrap}",
            broker_client_id=f"adflux-{self.group}",
            store="memory://",
            datadir=datadir,
            # Topics are declared once, by provision_topics; no leader topic either.
            topic_allow_declare=False,
            topic_disable_leader=True,
            web_enabled=False,
            stream_wait_empty=False,
            consumer_auto_offset_reset="earliest",
            loop=loop,
        )
        topic = app.topic(
            self.names.topic("candidate.upserted"),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

        def on_assigned(sender: Any, *_: Any, signal: Any, **__: Any) -> None:
            self.assigned.set()

        app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]  # mode stubs
        app.agent(topic, name="ml.online_assign_segments", concurrency=1)(self._consume)
        return app

    async def _consume(self, stream: faust.StreamT[bytes]) -> None:
        # Batches: one prediction, one transaction and one acknowledged produce per batch
        # instead of per record. Faust acks a batch's records only after the loop body ran.
        batches = cast(faust.Stream[bytes], stream).take_events(BATCH_SIZE, within=BATCH_WITHIN)
        async for events in batches:
            envelopes = [e for e in map(self._decode, events) if e is not None]
            if envelopes:
                # Prediction, the database and the producer block: keep them off faust's loop.
                await asyncio.to_thread(self.handle, envelopes)

    @staticmethod
    def _decode(event: faust.types.EventT[bytes]) -> Envelope | None:
        message = event.message
        # aiokafka hands faust every consumed record's headers as (str, bytes) pairs.
        headers = cast(Sequence[tuple[str, bytes]], message.headers or ())
        try:
            envelope = from_kafka(message.key, message.value, list(headers))
            envelope.payload()
            return envelope
        except MalformedEvent as exc:
            ONLINE_ASSIGNMENTS.labels("malformed").inc()
            log.warning("skipping malformed record at offset %s: %s", message.offset, exc)
            return None

    def handle(self, envelopes: list[Envelope]) -> None:
        """Assign and emit one batch, trying infrastructure errors again; never raises.
        Upserts handled before (a redelivery) are not assigned again: their stored outputs
        are sent again instead, as the runtime does."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                known = self.processed.lookup(e.id for e in envelopes)
                fresh = list({e.id: e for e in envelopes if e.id not in known}.values())
                assigned = self.assigner.assign_batch(fresh, self._track) if fresh else []
                self.producer.send_batch(
                    [
                        *(record for outputs in known.values() for record in outputs),
                        *(self._record(e) for e in assigned),
                    ]
                )
                ONLINE_ASSIGNMENTS.labels("duplicate").inc(len(known))
                ONLINE_ASSIGNMENTS.labels("assigned").inc(len(assigned))
                ONLINE_ASSIGNMENTS.labels("no_model").inc(len(fresh) - len(assigned))
                return
            except INFRASTRUCTURE_ERRORS as exc:
                if attempt == ATTEMPTS:
                    ONLINE_ASSIGNMENTS.labels("failed").inc(len(envelopes))
                    log.error("online assignment of %d candidates failed: %s", len(envelopes), exc)
                    return
                log.warning("online assignment: %s; trying again", exc)
                time.sleep(attempt)
            except Exception:
                ONLINE_ASSIGNMENTS.labels("failed").inc(len(envelopes))
                log.exception("online assignment of %d candidates failed", len(envelopes))
                return

    def _record(self, envelope: Envelope) -> OutgoingRecord:
        return OutgoingRecord.of(self.names.topic(envelope.type), envelope)

    def _track(self, session: Session, pairs: list[tuple[Envelope, Envelope]]) -> None:
        for upsert, segmented in pairs:
            self.processed.add(session, upsert.id, upsert.type, [self._record(segmented)])
