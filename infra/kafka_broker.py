"""Start and stop real Apache Kafka brokers (KRaft) from the jars Maven resolved: one node,
or a cluster of combined broker+controller nodes (`make kafka BROKERS=3`).

Used by the Makefile (`make kafka`, `make kafka-stop`) and by tests that need brokers of
their own (the chaos test restarts one, the cluster test kills one). A broker is started only
when none answers on its port, and `stop` only stops a broker whose PID file this module wrote.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBS = ROOT / ".cache" / "kafka" / "libs"
POM = ROOT / "infra" / "kafka" / "pom.xml"
LOG4J = ROOT / "infra" / "kafka" / "log4j2.properties"


@dataclass(frozen=True)
class BrokerSpec:
    """Where one broker listens and keeps its data, PID and log."""

    port: int = 9092
    controller_port: int = 9093
    data_dir: Path = ROOT / ".run" / "kafka-data"
    pid_file: Path = ROOT / ".run" / "kafka.pid"
    log_file: Path = ROOT / ".run" / "kafka.log"
    node_id: int = 1
    # `controller.quorum.voters` of the whole cluster; empty: this node alone.
    voters: str = ""
    # Replicas of the broker's internal topics (offsets, transactions): the cluster's size.
    cluster_size: int = 1

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def cluster(port: int, brokers: int, run_dir: Path = ROOT / ".run") -> list[BrokerSpec]:
    """`brokers` nodes on ports port, port+2, … (controllers one above each); the first keeps
    the single broker's files, so `make kafka` and `make kafka BROKERS=1` are the same."""
    ports = [(port + 2 * i, port + 2 * i + 1) for i in range(brokers)]
    voters = ",".join(f"{i}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports, 1))
    return [
        BrokerSpec(
            port=p,
            controller_port=c,
            data_dir=run_dir / ("kafka-data" if i == 1 else f"kafka-{i}-data"),
            pid_file=run_dir / ("kafka.pid" if i == 1 else f"kafka-{i}.pid"),
            log_file=run_dir / ("kafka.log" if i == 1 else f"kafka-{i}.log"),
            node_id=i,
            voters=voters,
            cluster_size=brokers,
        )
        for i, (p, c) in enumerate(ports, 1)
    ]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def ensure_jars() -> None:
    """Resolve the broker's jars with Maven into .cache/kafka/libs (once)."""
    if LIBS.is_dir() and any(LIBS.glob("kafka_2.13-*.jar")):
        return
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={LIBS}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )


def _java(*args: str, log: Path | None = None) -> list[str]:
    return [
        "java",
        "-Xms256m",
        "-Xmx768m",
        "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={LOG4J}",
        "-Djava.awt.headless=true",
        "-cp",
        f"{LIBS}/*",
        *args,
    ]


def _write_config(spec: BrokerSpec) -> Path:
    spec.data_dir.mkdir(parents=True, exist_ok=True)
    config = spec.data_dir / "server.properties"
    voters = spec.voters or f"{spec.node_id}@127.0.0.1:{spec.controller_port}"
    replicas, min_isr = min(spec.cluster_size, 3), min(spec.cluster_size, 2)
    config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={spec.node_id}",
                f"controller.quorum.voters={voters}",
                f"listeners=PLAINTEXT://127.0.0.1:{spec.port},"
                f"CONTROLLER://127.0.0.1:{spec.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{spec.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={spec.data_dir / 'logs'}",
                "num.partitions=3",
                "auto.create.topics.enable=false",
                f"offsets.topic.replication.factor={replicas}",
                "offsets.topic.num.partitions=10",
                f"transaction.state.log.replication.factor={replicas}",
                f"transaction.state.log.min.isr={min_isr}",
                f"share.coordinator.state.topic.replication.factor={replicas}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                "group.initial.rebalance.delay.ms=0",
                "log.segment.bytes=16777216",
                "",
            ]
        )
    )
    return config


def _format_storage(spec: BrokerSpec, config: Path, cluster_id: str) -> None:
    if (spec.data_dir / "logs" / "meta.properties").exists():
        return
    subprocess.run(
        _java(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(config),
            "--ignore-formatted",
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _raise_file_limit() -> None:
    """A broker keeps files open for every partition: allow as many as the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start(spec: BrokerSpec, timeout: float = 60.0, fresh: bool = False) -> bool:
    """Start a broker unless one answers; returns True when this call started it.
    `fresh` starts from empty storage (test runs), else the data of earlier runs is kept."""
    return bool(start_cluster([spec], timeout, fresh))


def start_cluster(specs: list[BrokerSpec], timeout: float = 90.0, fresh: bool = False) -> int:
    """Start every node that does not answer yet, all before waiting (a node listens only once
    a quorum of controllers is up); returns how many this call started."""
    starting = [spec for spec in specs if not port_open(spec.port)]
    if not starting:
        return 0
    ensure_jars()
    cluster_id = str(uuid.uuid4()).replace("-", "")[:22]
    procs = []
    for spec in starting:
        if fresh and spec.data_dir.exists():
            shutil.rmtree(spec.data_dir)
        config = _write_config(spec)
        _format_storage(spec, config, cluster_id)
        spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_file.open("ab") as log:
            proc = subprocess.Popen(
                _java("kafka.Kafka", str(config)),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_raise_file_limit,
            )
        spec.pid_file.parent.mkdir(parents=True, exist_ok=True)
        spec.pid_file.write_text(str(proc.pid))
        procs.append((spec, proc))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for spec, proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"Kafka exited with {proc.returncode}; see {spec.log_file}")
        if all(port_open(spec.port) for spec, _ in procs):
            return len(procs)
        time.sleep(0.2)
    raise TimeoutError(f"Kafka did not listen on {[s.port for s in starting]} within {timeout}s")


def stop(spec: BrokerSpec, timeout: float = 30.0, sig: int = signal.SIGTERM) -> bool:
    """Stop the broker whose PID file we wrote; returns True when one was stopped."""
    if not spec.pid_file.exists():
        return False
    pid = int(spec.pid_file.read_text().strip())
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        spec.pid_file.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
    spec.pid_file.unlink(missing_ok=True)
    return True


def _exited(pid: int) -> bool:
    """True once `pid` is gone; a broker this process started is reaped (a zombie child would
    otherwise look alive until the timeout)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass  # not our child: whoever started it reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["jars", "start", "stop", "status"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", "9092")))
    parser.add_argument("--brokers", type=int, default=1, help="nodes (ports port, port+2, …)")
    parser.add_argument("--fresh", action="store_true", help="start from empty storage")
    args = parser.parse_args(argv)
    specs = cluster(args.port, args.brokers)
    bootstrap = ",".join(spec.bootstrap for spec in specs)
    if args.command == "jars":
        ensure_jars()
    elif args.command == "start":
        started = start_cluster(specs, fresh=args.fresh)
        print(f"kafka: {'started' if started else 'already answering'} on {bootstrap}")
    elif args.command == "stop":
        stopped = sum(stop(spec) for spec in specs)
        print(f"kafka: stopped {stopped}" if stopped else "kafka: nothing we started is running")
    else:
        up = [spec.bootstrap for spec in specs if port_open(spec.port)]
        print(f"kafka: {len(up)} of {len(specs)} up on {bootstrap}")
        return 0 if len(up) == len(specs) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
