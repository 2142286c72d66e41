"""Which adapter serves which platform: built lazily, once per process (the Google SDK costs
~0.6 s and ~110 MB on first use, so Meta-only processes never load it)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from adplatforms.base import AdPlatform
from adplatforms.quota import PlatformQuota
from shared.settings import PlatformSettings

PlatformFactory = Callable[[], AdPlatform]


def once(build: Callable[[], AdPlatform]) -> PlatformFactory:
    """A factory that builds on first call and returns the same adapter afterwards."""
    built: list[AdPlatform] = []
    lock = threading.Lock()

    def get() -> AdPlatform:
        with lock:
            if not built:
                built.append(build())
            return built[0]

    return get


def platform_factories(
    settings: PlatformSettings, quota: PlatformQuota | None = None
) -> dict[str, PlatformFactory]:
    """Both adapters, consulting `quota` before every call (None: no shared quota)."""

    def meta() -> AdPlatform:
        from adplatforms.meta import MetaAdsPlatform

        return MetaAdsPlatform(settings, quota)

    def google() -> AdPlatform:
        from adplatforms.google import GoogleAdsPlatform

        return GoogleAdsPlatform(settings, quota)

    return {"meta": once(meta), "google": once(google)}
