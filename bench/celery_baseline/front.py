"""The baseline's HTTP front (`uvicorn bench.celery_baseline.front:app`): the seed's
`apply_async` on POST and its task-status endpoint (`AsyncResult(...).state`) on GET, in the
same request/response shapes the load driver uses for the AdFlux gateway."""

from __future__ import annotations

from typing import Any

from celery.result import AsyncResult
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from bench.celery_baseline.app import TASKS, celery


class TaskIn(BaseModel):
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


app = FastAPI(title="Celery baseline")


@app.post("/tasks", status_code=202)
def run_task(body: TaskIn) -> dict[str, str]:
    task = TASKS.get(body.name)
    if task is None:
        raise HTTPException(422, f"unknown task {body.name!r}")
    return {"task_id": str(task.apply_async(kwargs=body.kwargs).id)}


@app.get("/tasks/{task_id}")
def task_status(task_id: str) -> dict[str, str]:
    return {"task_id": task_id, "state": str(AsyncResult(task_id, app=celery).state)}
