"""The parts QCoDeS packs into a run's guid.

``SSSSSSSS-LLWW-WWWW-TTTT-TTTTTTTTTTTT``: sample id, location, work station and
the creation time in ms. Parsed by stripping dashes, as QCoDeS does, because
``update_GUIDs`` wrote guids with one dash fewer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["GuidParts", "is_well_formed", "parse_guid"]

_CANONICAL = re.compile(r"^[\da-f]{8}-([\da-f]{4}-){3}[\da-f]{12}$")


@dataclass(frozen=True)
class GuidParts:
    sample: int
    location: int
    work_station: int
    time_ms: int


def parse_guid(guid: str) -> GuidParts:
    """Split a guid into its parts; :class:`ValueError` if it is not 32 hex digits."""
    digits = guid.replace("-", "")
    if len(digits) != 32:
        raise ValueError(f"guid {guid!r} does not have 32 hex digits")
    try:
        return GuidParts(
            sample=int(digits[0:8], 16),
            location=int(digits[8:10], 16),
            work_station=int(digits[10:16], 16),
            time_ms=int(digits[16:32], 16),
        )
    except ValueError as exc:
        raise ValueError(f"guid {guid!r} is not hexadecimal") from exc


def is_well_formed(guid: str) -> bool:
    """True for the canonical 8-4-4-4-12 lower-case form QCoDeS writes."""
    return bool(_CANONICAL.match(guid))


# QCoDeS' 0->1 upgrade gives every run of a schema-v0 file this sample id.
UPGRADE_SAMPLE = 0xDEAFCAFE


def upgrade_guid(run_timestamp: float | None) -> str | None:
    """The guid QCoDeS' own 0->1 upgrade would give a schema-v0 run (default location and
    work station 0): stable, derived from the run alone, and the one the run keeps if the
    file is ever upgraded by QCoDeS. None for a run that never started (QCoDeS' upgrade
    cannot give those a guid either)."""
    if run_timestamp is None:
        return None
    digits = f"{UPGRADE_SAMPLE:08x}{0:02x}{0:06x}{round(run_timestamp * 1000):016x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
