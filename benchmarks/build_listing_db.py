"""Build the listing benchmark database: many runs with large station snapshots.

Written by genuine QCoDeS through a Station and its Measurement API, the way a
lab's database grows: one experiment, ``n_runs`` short 1-D sweeps, each with a
station snapshot of about ``snapshot_kb`` KB, every tenth run tagged with
plottr's ``inspectr_tag``.
"""

from __future__ import annotations

import json
from pathlib import Path


def build_listing_database(path: Path, n_runs: int = 2000, snapshot_kb: int = 50) -> None:
    from qcodes.dataset import (
        Measurement,
        initialise_or_create_database_at,
        load_or_create_experiment,
    )
    from qcodes.instrument import Instrument
    from qcodes.parameters import Parameter
    from qcodes.station import Station

    initialise_or_create_database_at(str(path))

    class Rack(Instrument):
        """An instrument with enough parameters to give a lab-sized snapshot."""

        def __init__(self, name: str, n_parameters: int) -> None:
            super().__init__(name)
            for i in range(n_parameters):
                self.add_parameter(
                    f"channel_{i:03d}_voltage",
                    parameter_class=Parameter,
                    initial_value=0.001 * i,
                    unit="V",
                    label=f"Channel {i} output voltage",
                    set_cmd=None,
                    get_cmd=None,
                )

        def get_idn(self) -> dict[str, str | None]:
            return {"vendor": "qcsql", "model": "Rack", "serial": None, "firmware": None}

    probe = Rack("probe", 100)
    per_parameter = len(json.dumps(probe.snapshot())) / 100
    probe.close()
    rack = Rack("rack", max(1, round(snapshot_kb * 1024 / per_parameter)))
    station = Station(rack)
    experiment = load_or_create_experiment("listing_benchmark", sample_name="chip_B3")
    x = Parameter("x", unit="V", set_cmd=None, get_cmd=None)
    y = Parameter("y", unit="A", set_cmd=None, get_cmd=None)
    for index in range(n_runs):
        measurement = Measurement(exp=experiment, station=station, name=f"sweep {index}")
        measurement.register_parameter(x)
        measurement.register_parameter(y, setpoints=(x,))
        with measurement.run() as saver:
            for value in range(5):
                saver.add_result((x, value), (y, value * 1e-9))
            if index % 10 == 0:
                saver.dataset.add_metadata("inspectr_tag", "star" if index % 20 == 0 else "cross")
    rack.close()
    experiment.conn.close()  # the last connection: SQLite checkpoints and removes the -wal
