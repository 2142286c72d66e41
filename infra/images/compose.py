"""`make compose-up` / `make compose-down`: run compose.yaml and remove it without a trace.

Runs podman-compose (docker compose where a Docker engine runs) after building the images,
then waits until every container is healthy: without systemd podman runs no health checks by
itself and podman-compose ignores `condition: service_healthy`, so each container's check is
run here (`podman healthcheck run`) until it passes. `down` removes the containers, the
network and the volumes, then reports anything of the project still there.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infra.images import build

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
PROJECT_LABEL = "com.docker.compose.project"
GRAFANA_IMAGE = "docker.io/grafana/grafana:11.4.0"


@dataclass(frozen=True)
class Stack:
    """One compose project: its name, its brokers (1, or 3 with the `cluster` profile) and
    the variables compose.yaml reads (ADFLUX_API_TOKEN, published ports, …)."""

    engine: build.Engine
    project: str = "adflux"
    brokers: int = 1
    variables: Mapping[str, str] = field(default_factory=dict)

    def profiles(self) -> list[str]:
        profiles = ["cluster"] if self.brokers == 3 else []
        if self.variables.get("GRAFANA_ADMIN_PASSWORD") and build.pullable(
            self.engine, GRAFANA_IMAGE
        ):
            profiles.append("grafana")
        return profiles

    def environment(self) -> dict[str, str]:
        env = {**self.engine.env, **self.variables}
        if self.brokers == 3:
            names = ("kafka", "kafka-2", "kafka-3")
            env |= {
                "ADFLUX_KAFKA_BOOTSTRAP": ",".join(f"{n}:9092" for n in names),
                "ADFLUX_KAFKA_VOTERS": ",".join(f"{i}@{n}:9093" for i, n in enumerate(names, 1)),
                "ADFLUX_TOPIC_REPLICATION_FACTOR": "3",
                "ADFLUX_TOPIC_MIN_INSYNC_REPLICAS": "2",
            }
        return env

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        if self.engine.command == "docker":
            command = ["docker", "compose"]
        else:
            command = [str(Path(sys.executable).parent / "podman-compose")]
        profiles = [arg for name in self.profiles() for arg in ("--profile", name)]
        env = self.environment()
        if args[0] == "down":  # compose.yaml requires the token even to remove the stack
            env.setdefault("ADFLUX_API_TOKEN", "unused-by-down")
        done = subprocess.run(
            [*command, "-f", str(COMPOSE_FILE), "-p", self.project, *profiles, *args],
            env=env,
            check=False,
            text=True,
            capture_output=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done

    def containers(self) -> list[str]:
        return self._names("ps", "-a", "--format", "{{.Names}}")

    def networks(self) -> list[str]:
        return self._names("network", "ls", "--format", "{{.Name}}")

    def volumes(self) -> list[str]:
        return self._names("volume", "ls", "--format", "{{.Name}}")

    def _names(self, *args: str) -> list[str]:
        listed = self.engine.run(
            *args, "--filter", f"label={PROJECT_LABEL}={self.project}", capture=True
        )
        return sorted(line for line in listed.stdout.splitlines() if line)

    def services(self) -> dict[str, str]:
        """Each container's compose service (podman-compose and docker compose name them
        differently; both label them)."""
        label = '{{index .Config.Labels "com.docker.compose.service"}}'
        return {
            name: self.engine.run("inspect", "--format", label, name, capture=True).stdout.strip()
            for name in self.containers()
        }

    def container(self, service: str) -> str | None:
        """The container of one service (the first replica), None when it has none."""
        return next((n for n, s in sorted(self.services().items()) if s == service), None)

    def exit_code(self, name: str) -> int:
        shown = self.engine.run("inspect", "--format", "{{.State.ExitCode}}", name, capture=True)
        return int(shown.stdout.strip())

    def unhealthy(self) -> list[str]:
        """Containers not (yet) running and healthy; those without a check only need to run."""
        waiting = []
        for name in self.containers():
            state = self.engine.run(
                "inspect", "--format", "{{.State.Status}}", name, capture=True
            ).stdout.strip()
            if state != "running" or not self._healthy(name):
                waiting.append(f"{name} ({state})")
        return waiting

    def _healthy(self, name: str) -> bool:
        if self.engine.command == "docker":
            status = self.engine.run(
                "inspect",
                "--format",
                "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                name,
                capture=True,
            ).stdout.strip()
            return status in ("", "healthy")
        check = self.engine.run("healthcheck", "run", name, check=False, capture=True)
        return check.returncode == 0 or "no defined healthcheck" in check.stderr

    def up(self, timeout: float = 300) -> float:
        """Build the images, start every container and wait until all are healthy; returns the
        seconds from `up` to healthy."""
        build.build_all(self.engine)
        started = time.monotonic()
        self.compose("up", "-d")
        deadline = started + timeout
        while waiting := self.unhealthy():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not healthy after {timeout:.0f}s: {', '.join(waiting)}")
            time.sleep(1.0)
        return time.monotonic() - started

    def logs(self, service: str, tail: int = 200) -> str:
        name = self.container(service)
        if name is None:
            return f"(no {service} container)"
        shown = self.engine.run("logs", "--tail", str(tail), name, check=False, capture=True)
        return shown.stdout + shown.stderr

    def down(self) -> list[str]:
        """Remove the containers, network and volumes; returns what was still left after
        compose's own `down` (then removed by name), so a caller can assert it is empty."""
        self.compose("down", "-v", "-t", "20")
        leftovers = [*self.containers(), *self.networks(), *self.volumes()]
        for name in self.containers():
            self.engine.run("rm", "-f", "-v", name, check=False, capture=True)
        for name in self.networks():
            self.engine.run("network", "rm", "-f", name, check=False, capture=True)
        for name in self.volumes():
            self.engine.run("volume", "rm", "-f", name, check=False, capture=True)
        return leftovers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--project", default=os.environ.get("COMPOSE_PROJECT_NAME", "adflux"))
    parser.add_argument("--brokers", type=int, choices=[1, 3], default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    variables = {k: v for k, v in os.environ.items() if k.startswith(("ADFLUX_", "GRAFANA_"))}
    stack = Stack(build.detect_engine(), args.project, args.brokers, variables)
    if args.command == "up":
        if "ADFLUX_API_TOKEN" not in variables:
            print("set ADFLUX_API_TOKEN (the token API clients send)", file=sys.stderr)
            return 2
        elapsed = stack.up(args.timeout)
        port = variables.get("ADFLUX_GATEWAY_PORT", "8000")
        print(f"AdFlux is up in containers ({elapsed:.0f}s): API http://127.0.0.1:{port}/docs")
        return 0
    leftovers = stack.down()
    print(f"{args.project}: removed" + (f" (forced: {', '.join(leftovers)})" if leftovers else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
