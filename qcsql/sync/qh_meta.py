"""The ``qh_meta`` instrument of a station snapshot, read in one place.

:class:`qcsql.qcodes_metadata.QHMetaData` (a QCoDeS instrument) writes the tags and
attributes a data platform files a run under into the snapshot; the sync records and
``qcsql show`` read them back through :func:`qh_meta_of`, without QCoDeS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["QH_META", "QhMeta", "qh_meta_of"]

QH_META = "qh_meta"  # the instrument's name (QHMetaData refuses any other)


@dataclass(frozen=True)
class QhMeta:
    """The tags and attributes of a snapshot's ``qh_meta`` instrument."""

    tags: list[str]
    attributes: dict[str, str]


def qh_meta_of(snapshot: dict[str, Any] | None) -> QhMeta | None:
    """The ``qh_meta`` instrument of a parsed snapshot; None when it has none. Raises
    ValueError naming what is wrong when the instrument is there but malformed."""
    instruments = ((snapshot or {}).get("station") or {}).get("instruments") or {}
    if not isinstance(instruments, dict) or QH_META not in instruments:
        return None
    try:
        parameters = instruments[QH_META]["parameters"]
        tags = parameters["tags"]["value"] or []
        attributes = parameters["attributes"]["value"] or {}
        if not isinstance(tags, list) or not isinstance(attributes, dict):
            raise TypeError("tags must be a list and attributes an object")
        return QhMeta(
            [str(tag) for tag in tags],
            {
                str(key): str(value["value"])
                if isinstance(value, dict) and "value" in value
                else str(value)
                for key, value in attributes.items()
            },
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(str(exc)) from exc
