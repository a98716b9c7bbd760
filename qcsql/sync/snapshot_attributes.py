"""Instrument settings of a run's station snapshot as sync attributes.

What the established QCoDeS sync agent documents ("instrument settings stored in the
snapshot") but does not do: every parameter of the chosen instruments that the
snapshot holds a value for becomes the attribute ``<instrument>.<parameter>`` (a
submodule's ``<instrument>.<submodule>.<parameter>``), its value followed by its unit.
Off unless asked for (``--snapshot-attributes``): a station of many instruments has
thousands of parameters. The labels of the parameters a run measured are its tags
already (the export's ``long_name`` is the label QCoDeS recorded for each).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from qcsql.sync.qh_meta import QH_META

__all__ = ["instrument_attributes"]

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return str(value)


def _settings(prefix: str, node: Any) -> Iterator[tuple[str, str]]:
    """``(name, "value unit")`` of every parameter with a value in one instrument's (or
    submodule's) snapshot, its submodules' after its own."""
    if not isinstance(node, dict):
        return
    parameters = node.get("parameters")
    if isinstance(parameters, dict):
        for name, parameter in parameters.items():
            if not isinstance(parameter, dict) or parameter.get("value") is None:
                continue  # not snapshotted with a value (snapshot_value=False, multi-parameters)
            unit = parameter.get("unit")
            value = _text(parameter["value"])
            yield f"{prefix}.{name}", f"{value} {unit}" if unit else value
    submodules = node.get("submodules")
    if isinstance(submodules, dict):
        for name, submodule in submodules.items():
            yield from _settings(f"{prefix}.{name}", submodule)


def instrument_attributes(
    snapshot: dict[str, Any] | None, instruments: Sequence[str]
) -> dict[str, str]:
    """The settings of ``instruments`` (every instrument but ``qh_meta`` when empty) in a
    parsed station snapshot; an instrument the snapshot does not have adds nothing."""
    found = ((snapshot or {}).get("station") or {}).get("instruments") or {}
    if not isinstance(found, dict):
        return {}
    names = list(instruments) or [name for name in found if name != QH_META]
    attributes: dict[str, str] = {}
    for name in names:
        if name not in found:
            log.debug("the snapshot has no instrument %r", name)
            continue
        attributes.update(_settings(name, found[name]))
    return attributes
