"""``QHMetaData``: the QCoDeS instrument that puts sync tags and attributes into snapshots.

Add it to the Station (in code, or in a Station YAML file as
``type: qcsql.qcodes_metadata.QHMetaData``) and every run's snapshot carries its
``tags`` and ``attributes`` parameters, which :func:`qcsql.sync.records.dataset_info`
reads back. It needs QCoDeS (``pip install qcsql[qcodes]``); ``import qcsql`` never
imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from qcodes.instrument import Instrument
from qcodes.parameters import Parameter

__all__ = ["QHMetaData"]

NAME = "qh_meta"


class QHMetaData(Instrument):
    """Tags and attributes for the data platform, stored in the station snapshot.

    Static tags and attributes are set at construction and survive :meth:`reset`;
    dynamic ones are added per measurement. Tags are kept once each, in order; a
    dynamic attribute overrides a static one of the same key.
    """

    def __init__(
        self,
        name: str = NAME,
        static_tags: Iterable[str] = (),
        static_attributes: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if name != NAME:
            raise ValueError(
                f"the metadata instrument must be called {NAME!r} (sync agents look for it), not {name!r}"
            )
        super().__init__(name, **kwargs)
        self._static_tags = list(dict.fromkeys(str(tag) for tag in static_tags))
        self._static_attributes = {str(k): v for k, v in (static_attributes or {}).items()}
        self._dynamic_tags: list[str] = []
        self._dynamic_attributes: dict[str, Any] = {}
        self.tags: Parameter = self.add_parameter(
            "tags", parameter_class=Parameter, set_cmd=None, get_cmd=None, label="Sync tags"
        )
        self.attributes: Parameter = self.add_parameter(
            "attributes",
            parameter_class=Parameter,
            set_cmd=None,
            get_cmd=None,
            label="Sync attributes",
        )
        self._publish()

    def _publish(self) -> None:
        """Keep the parameters (what the snapshot records) equal to static + dynamic."""
        self.tags.set(list(dict.fromkeys([*self._static_tags, *self._dynamic_tags])))
        self.attributes.set({**self._static_attributes, **self._dynamic_attributes})

    def add_tags(self, *tags: str) -> None:
        self._dynamic_tags.extend(str(tag) for tag in tags)
        self._publish()

    def add_attributes(self, attributes: Mapping[str, Any] | None = None, **more: Any) -> None:
        self._dynamic_attributes.update(
            {str(k): v for k, v in {**(attributes or {}), **more}.items()}
        )
        self._publish()

    def reset(self) -> None:
        """Forget the dynamic tags and attributes; the static ones stay."""
        self._dynamic_tags.clear()
        self._dynamic_attributes.clear()
        self._publish()

    def get_idn(self) -> dict[str, str | None]:
        return {"vendor": "qcsql", "model": "QHMetaData", "serial": None, "firmware": None}
