"""Published contracts: JSON Schemas of every event payload (`schemas/<type>/v<N>.json`) and
an AsyncAPI 3 document of every topic (`asyncapi.yaml`), generated from shared/events.py.

`python -m shared.contracts write` regenerates them; `check` fails when they are stale or
when a model change breaks an earlier version (a removed field, a new required field, a
changed type).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from shared.events import CONTRACTS, EventDeclaration
from shared.topics import TOPIC_SPECS

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
ASYNCAPI = ROOT / "asyncapi.yaml"


def schema_of(contract: EventDeclaration) -> dict[str, Any]:
    schema = contract.model.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": contract.dataschema,
        "title": contract.type,
        **schema,
    }


def render(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def asyncapi() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for contract in CONTRACTS.values():
        spec = TOPIC_SPECS[contract.type]
        name = contract.model.__name__
        messages[name] = {
            "name": contract.type,
            "contentType": "application/json",
            "summary": (contract.model.__doc__ or contract.type).strip().splitlines()[0],
            "bindings": {"kafka": {"key": {"type": "string", "description": "aggregate id"}}},
            "headers": {
                "type": "object",
                "description": "CloudEvents 1.0 binary mode attributes",
                "properties": {
                    h: {"type": "string"}
                    for h in (
                        "ce_specversion",
                        "ce_id",
                        "ce_type",
                        "ce_source",
                        "ce_subject",
                        "ce_time",
                        "ce_dataschema",
                        "ce_taskid",
                        "ce_correlationid",
                        "ce_causationid",
                        "ce_attempt",
                    )
                },
            },
            "payload": {"$ref": f"./{contract.dataschema}"},
        }
        channels[contract.type] = {
            "address": contract.type,
            "description": f"partitions={spec.partitions}"
            + (", compacted" if spec.compacted else f", retention.ms={spec.retention_ms}"),
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"kafka": {"partitions": spec.partitions}},
        }
        operations[f"receive-{contract.type}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{contract.type}"},
        }
        if contract.upstream:
            operations[f"send-{contract.type}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{contract.type}"},
                "description": contract.upstream,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "AdFlux Events",
            "version": "1.0.0",
            "description": "Topics downstream systems subscribe to. Records carry CloudEvents "
            "headers; failed records move to <topic>.retry.<tier> and <topic>.dlq.",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:9092", "protocol": "kafka"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def expected_files() -> dict[Path, str]:
    files = {
        SCHEMAS / c.type / f"v{c.version}.json": render(schema_of(c)) for c in CONTRACTS.values()
    }
    files[ASYNCAPI] = yaml.safe_dump(asyncapi(), sort_keys=False)
    return files


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What a consumer of `old` would no longer accept from producers of `new`."""
    problems = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for field in old_props:
        if field not in new_props:
            problems.append(f"field {field!r} removed")
        elif old_props[field].get("type") != new_props[field].get("type"):
            problems.append(f"field {field!r} changed type")
    for field in set(new.get("required", [])) - set(old.get("required", [])):
        problems.append(f"field {field!r} became required")
    return problems


def stale() -> list[str]:
    return [
        str(path.relative_to(ROOT))
        for path, text in expected_files().items()
        if not path.exists() or path.read_text() != text
    ]


def incompatible() -> list[str]:
    """Breaking changes of each model against every published version of its schema."""
    problems = []
    for contract in CONTRACTS.values():
        new = schema_of(contract)
        for path in sorted((SCHEMAS / contract.type).glob("v*.json")):
            old = json.loads(path.read_text())
            problems += [f"{contract.type} vs {path.name}: {p}" for p in breaking_changes(old, new)]
    return problems


def write() -> None:
    """Regenerate; refuses to overwrite a published version with a breaking change."""
    problems = incompatible()
    if problems:
        raise SystemExit("breaking changes (add a new version instead):\n" + "\n".join(problems))
    for path, text in expected_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"]:
        write()
        return 0
    outdated, problems = stale(), incompatible()
    for path in outdated:
        print(f"stale: {path} (run `make schemas`)")
    for problem in problems:
        print(f"breaking: {problem}")
    return 1 if outdated or problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
