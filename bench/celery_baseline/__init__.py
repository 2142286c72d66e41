"""The seed's background-task design, rebuilt only to be measured beside AdFlux: Celery 5 with
Redis as broker and result backend, configured as the seed configured it, behind a small
FastAPI front (POST /tasks -> apply_async, GET /tasks/{id} -> AsyncResult state)."""
