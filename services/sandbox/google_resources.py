"""The Search campaign tree the Google sandbox serves: its resources, how each links to its
parent, how they are named, where they are stored, and dotted field paths on their messages."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.sandbox.state import SandboxState

# The mutable resources, parents first; each is stored under its plural
# (`state.google_objects("campaigns")`) and served by `<Camel>Service.Mutate<Camel>s`.
RESOURCES = ("campaign_budget", "campaign", "ad_group", "ad_group_ad")
# A resource's parent and the field that links to it; GAQL can select and filter on the
# parent's fields too (`SELECT campaign.id FROM ad_group`).
PARENTS = {
    "campaign": ("campaign_budget", "campaign_budget"),
    "ad_group": ("campaign", "campaign"),
    "ad_group_ad": ("ad_group", "ad_group"),
}


def camel(resource: str) -> str:
    return "".join(part.title() for part in resource.split("_"))


def resource_id(resource_name: str) -> str:
    return resource_name.rsplit("/", 1)[-1]


def objects(state: SandboxState, resource: str) -> dict[str, Any]:
    """The stored objects of one resource, by resource name (mutate under `state.lock`)."""
    return state.google_objects(f"{resource}s")


def field(descriptor: Descriptor, path: str) -> FieldDescriptor | None:
    """The field at a dotted `path` of a message type, or None if there is none."""
    found: FieldDescriptor | None = None
    for part in path.split("."):
        if descriptor is None or part not in descriptor.fields_by_name:
            return None
        found = descriptor.fields_by_name[part]
        descriptor = found.message_type
    return found


def copy_field(source: Message, target: Message, path: str) -> None:
    """Set the field at a dotted `path` of `target` to its value in `source`."""
    *parents, leaf = path.split(".")
    for part in parents:
        source, target = getattr(source, part), getattr(target, part)
    target.ClearField(leaf)
    descriptor = source.DESCRIPTOR.fields_by_name[leaf]
    if descriptor.is_repeated:
        getattr(target, leaf).extend(getattr(source, leaf))
    elif descriptor.message_type is not None:
        getattr(target, leaf).CopyFrom(getattr(source, leaf))
    else:
        setattr(target, leaf, getattr(source, leaf))
