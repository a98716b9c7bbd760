"""What a sync agent needs: records of runs for a data platform, new-run discovery.

``from qcsql.sync import QCoDeSConfigData, dataset_info, runs_after``
"""

from qcsql.errors import SnapshotMetadataWarning
from qcsql.sync.records import DatasetInfo, QCoDeSConfigData, dataset_info, runs_after

__all__ = [
    "DatasetInfo",
    "QCoDeSConfigData",
    "SnapshotMetadataWarning",
    "dataset_info",
    "runs_after",
]
