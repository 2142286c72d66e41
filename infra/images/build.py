"""`make images`: build every AdFlux container image, each skipped when its inputs are unchanged.

Images: the services (`Dockerfile`), Kafka, PostgreSQL and Prometheus (`infra/images/*/`).
Each is built from a base passed as the `BASE_IMAGE` build argument: the official image where
a registry answers (or is already pulled), else a Debian bookworm base built here with
mmdebstrap and `podman import` (Debian's mirror is reachable where no container registry is).
An image is tagged `<name>:<hash of its inputs and base>` and `<name>:latest`; a build whose
hash tag exists is skipped, so repeated runs cost a few seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from infra import kafka_broker

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "infra" / "images" / "containers.conf"
WHEELHOUSE = ROOT / ".cache" / "wheelhouse"
DEBIAN_SUITE = "bookworm"
DEBIAN_SOURCES = (
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE} main",
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main",
)


@dataclass(frozen=True)
class Base:
    """A base image: `official` where a registry answers, else Debian with `packages`."""

    name: str
    official: str
    packages: tuple[str, ...]

    @property
    def local_tag(self) -> str:
        digest = hashlib.sha256(" ".join((*DEBIAN_SOURCES, *self.packages)).encode()).hexdigest()
        return f"localhost/adflux-base-{self.name}:{digest[:12]}"


@dataclass(frozen=True)
class Image:
    """One image: its Containerfile, its base and the paths whose content it is built from."""

    name: str
    containerfile: str
    base: Base
    inputs: tuple[str, ...]

    @property
    def repository(self) -> str:
        return f"localhost/{self.name}"


PYTHON = Base("python", "docker.io/library/python:3.11-slim", ("python3", "python3-venv"))
JRE = Base("jre", "docker.io/library/eclipse-temurin:17-jre", ("openjdk-17-jre-headless",))
POSTGRES = Base("postgres", "docker.io/library/postgres:15", ("postgresql-15",))
PROMETHEUS = Base("prometheus", "docker.io/prom/prometheus:v2.42.0", ("prometheus",))

IMAGES = (
    Image(
        "adflux-events",
        "Dockerfile",
        PYTHON,
        (
            "Dockerfile",
            ".dockerignore",
            "pyproject.toml",
            "constraints.txt",
            "infra/images/healthcheck.py",
            "config",
            "schemas",
            "shared",
            "services",
            "adplatforms",
        ),
    ),
    Image(
        "adflux-kafka",
        "infra/images/kafka/Containerfile",
        JRE,
        ("infra/images/kafka", "infra/kafka"),
    ),
    Image(
        "adflux-postgres",
        "infra/images/postgres/Containerfile",
        POSTGRES,
        ("infra/images/postgres",),
    ),
    Image(
        "adflux-prometheus",
        "infra/images/prometheus/Containerfile",
        PROMETHEUS,
        ("infra/images/prometheus", "infra/prometheus"),
    ),
)


@dataclass(frozen=True)
class Engine:
    """The container engine: docker where its daemon answers, else podman (our engine config)."""

    command: str

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF)),
        }

    def run(
        self, *args: str, check: bool = True, capture: bool = False, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.command, *args],
            env=self.env,
            check=check,
            text=True,
            capture_output=capture,
            timeout=timeout,
        )

    def exists(self, image: str) -> bool:
        return self.run("image", "inspect", image, check=False, capture=True).returncode == 0

    def image_id(self, image: str) -> str:
        return self.run(
            "image", "inspect", "--format", "{{.Id}}", image, capture=True
        ).stdout.strip()


def detect_engine() -> Engine:
    """docker when a Docker daemon answers, else podman; fails clearly when neither runs."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    ):
        return Engine("docker")
    if shutil.which("podman"):
        return Engine("podman")
    raise SystemExit("no container engine: run infra/podman.sh (make container-tools) first")


def pullable(engine: Engine, image: str) -> bool:
    """The image is here, or its registry answers and it could be pulled."""
    if engine.exists(image):
        return True
    return registry_answers(engine) and _pull(engine, image)


@cache
def registry_answers(engine: Engine) -> bool:
    """One probe per process (every official base is on Docker Hub): where no registry is
    reachable, later pulls are not even tried, so a hanging DNS costs one timeout, not five."""
    return _pull(engine, PYTHON.official)


def _pull(engine: Engine, image: str) -> bool:
    try:
        pulled = engine.run("pull", "--quiet", image, check=False, capture=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return pulled.returncode == 0


def _build_debian_base(engine: Engine, base: Base) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="adflux-base-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                f"--include={','.join(('ca-certificates', *base.packages))}",
                '--aptopt=APT::Install-Recommends "false"',
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                # update-alternatives (the JRE's postinst) needs the man directory to exist.
                "--essential-hook=mkdir -p $1/usr/share/man/man1",
                # No apt lists in the image: it is only ever built here, never updated inside.
                "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
                DEBIAN_SUITE,
                str(tarball),
                *DEBIAN_SOURCES,
            ],
            check=True,
        )
        engine.run("import", "--change", 'CMD ["/bin/bash"]', str(tarball), base.local_tag)
    print(f"images: built {base.local_tag} in {time.monotonic() - started:.0f}s", flush=True)


def resolve_base(engine: Engine, base: Base) -> str:
    """The image to build on: the official one when it can be had, else the local Debian one."""
    if pullable(engine, base.official):
        return base.official
    if not engine.exists(base.local_tag):
        _build_debian_base(engine, base)
    return base.local_tag


def _files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for child in sorted(path.rglob("*")):
        if child.is_file() and "__pycache__" not in child.parts and child.suffix != ".pyc":
            yield child


def inputs_hash(image: Image, base_id: str) -> str:
    digest = hashlib.sha256(base_id.encode())
    for entry in image.inputs:
        for path in _files(ROOT / entry):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ensure_wheelhouse() -> None:
    """Wheels of every dependency, built on the host (the image build installs them with
    `--no-index`); rebuilt only when pyproject.toml or constraints.txt change."""
    pyproject, constraints = ROOT / "pyproject.toml", ROOT / "constraints.txt"
    key = hashlib.sha256(pyproject.read_bytes() + constraints.read_bytes()).hexdigest()
    stamp = WHEELHOUSE / "inputs.sha256"
    if stamp.exists() and stamp.read_text() == key:
        return
    shutil.rmtree(WHEELHOUSE, ignore_errors=True)
    WHEELHOUSE.mkdir(parents=True)
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    (WHEELHOUSE / "requirements.txt").write_text("\n".join(dependencies) + "\n")
    shutil.copy(constraints, WHEELHOUSE / "constraints.txt")
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(WHEELHOUSE)]
    subprocess.run(
        [*pip, "-c", str(constraints), "-r", str(WHEELHOUSE / "requirements.txt")], check=True
    )
    stamp.write_text(key)


def build(engine: Engine, image: Image) -> str:
    """Build `image` unless its hash tag exists; returns that tag."""
    base = resolve_base(engine, image.base)
    tag = f"{image.repository}:{inputs_hash(image, engine.image_id(base))}"
    if not engine.exists(tag):
        started = time.monotonic()
        format_args = ["--format", "docker"] if engine.command == "podman" else []
        engine.run(
            "build",
            *format_args,
            "--quiet",
            "--file",
            str(ROOT / image.containerfile),
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--tag",
            tag,
            str(ROOT),
        )
        print(f"images: built {tag} in {time.monotonic() - started:.0f}s", flush=True)
    engine.run("tag", tag, f"{image.repository}:latest")
    _remove_older_tags(engine, image.repository, keep=(tag, f"{image.repository}:latest"))
    return tag


def _remove_older_tags(engine: Engine, repository: str, keep: tuple[str, ...]) -> None:
    """Untag earlier builds of `repository` (each code change makes one); layers still used
    by the kept tags stay."""
    listed = engine.run(
        "images",
        "--filter",
        f"reference={repository}",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        capture=True,
    )
    for old in set(listed.stdout.split()) - set(keep):
        engine.run("rmi", old, check=False, capture=True)


def build_all(engine: Engine) -> list[str]:
    ensure_wheelhouse()
    kafka_broker.ensure_jars()
    return [build(engine, image) for image in IMAGES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    engine = detect_engine()
    for tag in build_all(engine):
        print(f"images: {tag} ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
