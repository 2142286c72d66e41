"""`adflux` command line (the seed's run-task / run-worker / run-beat, plus dead letters):
a client of the gateway's HTTP API, and a launcher of services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from typing import Annotated, Any

import httpx
import typer

from services.gateway.settings import GatewaySettings

app = typer.Typer(
    help="Operate AdFlux Events: tasks, dead letters, services.", no_args_is_help=True
)
task_app = typer.Typer(help="Run and inspect tasks.", no_args_is_help=True)
dlq_app = typer.Typer(help="List and replay dead letters.", no_args_is_help=True)
app.add_typer(task_app, name="task")
app.add_typer(dlq_app, name="dlq")

SERVICES = ("gateway", "publisher", "sync", "ml", "ticker", "sandbox")


def _client() -> httpx.Client:
    port = GatewaySettings.model_fields["http_port"].default
    base = os.environ.get("ADFLUX_API_URL", f"http://127.0.0.1:{port}")
    token = os.environ.get("ADFLUX_API_TOKEN", "dev-token")
    return httpx.Client(
        base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _call(method: str, path: str, **kwargs: Any) -> Any:
    try:
        with _client() as client:
            response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        typer.echo(
            f"error: cannot reach the gateway at {exc.request.url.copy_with(path='/')} "
            f"({exc.__class__.__name__}: {exc}); is it running? (ADFLUX_API_URL)",
            err=True,
        )
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        typer.echo(f"error {response.status_code}: {response.text}", err=True)
        raise typer.Exit(1)
    return response.json()


def _json_arg(raw: str | None, what: str) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        typer.echo(f"--{what} is not valid JSON: {exc}", err=True)
        raise typer.Exit(2) from exc


@task_app.command("run")
def run_task(
    name: Annotated[str, typer.Argument(help="Task name, e.g. campaign.sync")],
    args: Annotated[str | None, typer.Option(help="JSON list of positional arguments")] = None,
    kwargs: Annotated[str | None, typer.Option(help="JSON object of keyword arguments")] = None,
    countdown: Annotated[float | None, typer.Option(help="Seconds to wait before running")] = None,
    eta: Annotated[
        datetime | None,
        typer.Option(
            help="When to run it, with its UTC offset, e.g. 2030-01-01T09:00:00+00:00",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"],
        ),
    ] = None,
    expires: Annotated[
        float | None, typer.Option(help="Seconds after which it must not run")
    ] = None,
    time_limit: Annotated[
        float | None, typer.Option(help="Seconds an attempt may run before it is stopped")
    ] = None,
    max_retries: Annotated[
        int | None, typer.Option(help="Retries after a transient failure")
    ] = None,
    retry_delay: Annotated[
        float | None, typer.Option(help="Seconds before the first retry")
    ] = None,
) -> None:
    """Run a registered task by name (Celery's apply_async)."""
    body = {
        "name": name,
        "args": _json_arg(args, "args") or [],
        "kwargs": _json_arg(kwargs, "kwargs") or {},
        "countdown": countdown,
        "eta": eta.isoformat() if eta else None,
        "expires": expires,
        "time_limit": time_limit,
        "max_retries": max_retries,
        "retry_delay": retry_delay,
    }
    result = _call("POST", "/tasks", json={k: v for k, v in body.items() if v is not None})
    typer.echo(f"task started with id {result['task_id']}")


@task_app.command("status")
def task_status(task_id: str) -> None:
    """Show a task's state, result or error, and history."""
    typer.echo(json.dumps(_call("GET", f"/tasks/{task_id}"), indent=2))


@task_app.command("revoke")
def revoke(task_id: str) -> None:
    """Revoke a task: if it has not started it never runs."""
    typer.echo(json.dumps(_call("POST", f"/tasks/{task_id}/revoke")))


@dlq_app.command("list")
def dlq_list(
    topic: Annotated[str | None, typer.Option(help="Only this original topic")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include replayed ones")] = False,
) -> None:
    """List dead letters with their cause."""
    params: dict[str, Any] = {"include_replayed": all_}
    if topic:
        params["topic"] = topic
    for dead in _call("GET", "/dead-letters", params=params):
        typer.echo(
            f"{dead['id']}  {dead['original_topic']}  {dead['reason']}  "
            f"{dead['error_class']}: {dead['error_message']}  task={dead['task_id']}"
        )


@dlq_app.command("replay")
def dlq_replay(
    dead_letter_id: str,
    force: Annotated[bool, typer.Option(help="Replay one that was replayed already")] = False,
) -> None:
    """Send a dead letter back to its original topic (same task id, attempts reset), once."""
    params = {"force": "true"} if force else None
    result = _call("POST", f"/dead-letters/{dead_letter_id}/replay", params=params)
    typer.echo(f"replayed to {result['replayed_to']} (task {result['task_id']})")


@app.command("worker")
def worker(service: Annotated[str, typer.Argument(help=f"One of {', '.join(SERVICES)}")]) -> None:
    """Run a service in the foreground (the seed's run-worker; `ticker` is run-beat)."""
    if service not in SERVICES:
        typer.echo(f"unknown service {service!r}; one of {', '.join(SERVICES)}", err=True)
        raise typer.Exit(2)
    raise typer.Exit(subprocess.call([sys.executable, "-m", f"services.{service}"]))


if __name__ == "__main__":
    app()
