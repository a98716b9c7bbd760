"""Write a :class:`~qcsql.export.layout.DatasetPlan` as the netCDF4/HDF5 file QCoDeS exports.

The netCDF4 bookkeeping (dimension scales, ``REFERENCE_LIST``/``DIMENSION_LIST``,
``_Netcdf4Dimid``, ``_Netcdf4Coordinates``, the ``_PFNC_DOUBLE_COMPLEX_TYPE``
named type for complex data, ``_NCProperties``) is delegated to h5netcdf: it is
what xarray, and so QCoDeS, writes these files with, so the conventions match by
construction rather than by imitation. What xarray adds on top (``_FillValue``
NaN on floating variables, CF ``coordinates`` attributes, text as variable-length
UTF-8) is reproduced here.

Files are written under a temporary name in the target folder and renamed when
complete; a failure (full disk, no permission, an interrupted export) leaves no
file behind and raises :class:`ExportError`. The same plan always gives the same
bytes: nothing time-dependent is written.

The temporary name is ``.<final name>.<8 random characters>.partial`` (the pattern of
``tempfile.mkstemp(prefix=".<final name>.", suffix=".partial")``). Only a process that
dies without unwinding (SIGKILL, a power cut) can leave one behind; the next export to
the same final name removes such leftovers of that name, and nothing in qcsql ever reads
a ``.partial`` file as an export (:func:`qcsql.data.exported.is_partial_name`).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5netcdf
import h5py
import numpy as np
import numpy.typing as npt

from qcsql.data.exported import (
    PARTIAL_ALPHABET,
    PARTIAL_RANDOM,
    PARTIAL_SUFFIX,
)
from qcsql.errors import ExportError
from qcsql.export.keys import same_as_qcodes_sees
from qcsql.export.layout import DatasetPlan, NotStreamable, Variable
from qcsql.export.writeback import Writeback

__all__ = [
    "STREAM_CHUNK",
    "attribute_value",
    "remove_leftovers",
    "write_bytes_atomically",
    "write_plan",
]


# Rows per HDF5 chunk of a streamed (growing) variable: 1 MiB of doubles.
STREAM_CHUNK = 131_072


def _leftover_pattern(final: Path) -> re.Pattern[str]:
    return re.compile(re.escape(f".{final.name}.") + PARTIAL_RANDOM + re.escape(PARTIAL_SUFFIX))


def _in_use(path: Path) -> bool:
    """Whether a live writer holds ``path`` open. HDF5 (>= 1.10, unless
    HDF5_USE_FILE_LOCKING=FALSE) holds an exclusive flock on a file it writes, so a
    partial file nobody can lock belongs to an export still running, in this or another
    process. Windows has no flock, but refuses to delete a file that is open instead."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return True  # cannot look: leave it alone
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)  # closing releases the probe's lock
    return False


def remove_leftovers(final: Path) -> list[Path]:
    """Remove the temporary files an export to ``final`` left when its process died
    (SIGKILL, power cut) and return them. Only names of exactly the pattern
    ``_atomic_target`` creates for this final name are touched, only regular files,
    and none that a running export holds open; a file that cannot be removed stays."""
    pattern = _leftover_pattern(final)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return removed  # the write that follows reports the folder's problem
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        path = Path(entry.path)
        try:
            if not entry.is_file(follow_symlinks=False) or _in_use(path):
                continue
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def _coordinates_attribute(plan: DatasetPlan, variable: Variable) -> str | None:
    """xarray's CF encoding: non-dimension coordinates that lie on a data variable's dims."""
    if variable.is_coord:
        return None
    names = sorted(
        coord.name
        for coord in plan.coords
        if coord.name not in plan.dims and set(coord.dims) <= set(variable.dims)
    )
    return " ".join(names) or None


def _text(value: Any) -> str:
    """A string as xarray stores it: missing values (None, or the NaN of a hole) as ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _storable(data: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], Any, Any]:
    """(data, dtype, fill value) as xarray encodes them for h5netcdf."""
    if data.dtype.kind in "UO":
        text = np.array([_text(v) for v in data.ravel()], dtype=object)
        return text.reshape(data.shape), h5py.string_dtype("utf-8"), None
    if data.dtype.kind == "f":
        return data, data.dtype, np.nan
    if data.dtype.kind == "c":
        return data, data.dtype, complex(np.nan, np.nan)  # see _write: no _FillValue for it
    if data.dtype.kind == "b":
        return data.astype(np.int8), np.dtype(np.int8), None  # see _write: the dtype attribute
    return data, data.dtype, None


def _chunks(plan: DatasetPlan, variable: Variable) -> tuple[int, ...] | None:
    """HDF5 chunks only where a dimension grows (contiguous otherwise, as xarray writes)."""
    if not set(variable.dims) & plan.unlimited:
        return None
    rows = max(1, min(STREAM_CHUNK, plan.expected_rows or STREAM_CHUNK))  # small runs, small files
    return tuple(rows if d in plan.unlimited else plan.dims[d] for d in variable.dims)


def attribute_value(value: Any) -> Any:
    if isinstance(value, list) and value:
        return (
            np.array(value, dtype=object)
            if all(isinstance(v, str) for v in value)
            else np.array(value)
        )
    if isinstance(value, list):
        return np.array([], dtype=np.float64)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _write(plan: DatasetPlan, path: Path) -> None:
    writeback = Writeback(path)
    try:
        _write_file(plan, path, writeback)
    finally:
        writeback.close()  # its own descriptor of the file, once HDF5 has closed the file


def _write_file(plan: DatasetPlan, path: Path, writeback: Writeback) -> None:
    # No chunk cache (rdcc_nbytes=0): HDF5 places a chunk in the file when the chunk leaves
    # the dataset's cache, which with a cache is when the dataset's last open handle
    # closes. h5netcdf opens an h5py handle for each write and leaves its close to the
    # garbage collector, so anything holding that Python object a moment longer (dask's
    # worker profiler samples every thread's frames every few milliseconds; a debugger, a
    # traceback) moved chunks and chunk-index nodes to a later write or to the close, and
    # the same run gave different bytes. Without a cache a chunk is placed by the write
    # that makes it, in the batches' order. Neither slower nor larger: each write's handle
    # closed right after it, so the cache never outlived a write (the bytes are the same).
    with h5netcdf.File(path, "w-", rdcc_nbytes=0) as handle:  # "w-": see _atomic_target
        handle.dimensions = {
            dim: None if dim in plan.unlimited else size for dim, size in plan.dims.items()
        }
        ordered = [v for v in plan.variables.values() if v.name in plan.dims] + [
            v for v in plan.variables.values() if v.name not in plan.dims
        ]
        created_by_name = {}
        for variable in ordered:
            data, dtype, fill = _storable(variable.data)
            created = handle.create_variable(
                variable.name,
                variable.dims,
                dtype=dtype,
                data=None if variable.streamed else data,
                fillvalue=fill,
                chunks=_chunks(plan, variable),
            )
            if data.dtype.kind == "c":
                # xarray writes no _FillValue for complex numbers, but fills their holes
                # with NaN + NaNj: the dataset keeps that fill value, for the cells a
                # streamed layout leaves without a row, and loses the attribute.
                del created.attrs["_FillValue"]
            created_by_name[variable.name] = created
            for key, value in variable.attrs.items():
                created.attrs[key] = attribute_value(value)
            if variable.data.dtype.kind == "b":
                # netCDF has no booleans: xarray stores them as int8 and says so, last, in
                # a "dtype" attribute that its reader (and so QCoDeS') turns back into bool
                created.attrs["dtype"] = "bool"
            coordinates = _coordinates_attribute(plan, variable)
            if coordinates:
                created.attrs["coordinates"] = coordinates
        for key, value in plan.attrs.items():
            handle.attrs[key] = attribute_value(value)
        if plan.source is not None:
            _write_batches(plan, handle, created_by_name, writeback)


def _write_batches(
    plan: DatasetPlan, handle: Any, created: Mapping[str, Any], writeback: Writeback
) -> None:
    """Write the batches of ``plan.source`` into the created variables, one after the
    other (a batch is written before the next is asked for, so the source reads its rows
    only as fast as the file takes them and memory holds one batch at a time). A region
    reaching past an unlimited dimension grows it (h5netcdf resizes every variable along
    it); one reaching past a fixed dimension means the rows do not fit the plan."""
    assert plan.source is not None
    sizes = dict(plan.dims)
    batches = plan.source()
    try:
        for batch in batches:
            for dim, end in plan.reach(batch, sizes).items():
                if end <= sizes[dim]:
                    continue
                if dim not in plan.unlimited:
                    raise NotStreamable(f"{batch.variable}: rows past the end of {dim}")
                handle.resize_dimension(dim, end)
                sizes[dim] = end
            target = created[batch.variable]
            if not batch.compare:
                values = batch.values
                if values.dtype.kind == "b":
                    values = values.astype(np.int8)  # as _storable stores booleans
                target[batch.region] = values
                writeback.wrote(values.nbytes)
            elif not same_as_qcodes_sees(
                np.asarray(target[batch.region]), np.asarray(batch.values)
            ):
                raise NotStreamable(f"{batch.variable}: values differ from those written")
            # Let go of the values before the source makes its next batch (as large as a
            # column's window): holding them would add a window to the peak memory.
            del batch, target
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # a source given up on stops reading its rows now, not when collected


def _temporary_path(final: Path) -> Path:
    """A free name of the ``.partial`` pattern beside ``final``; nothing is created."""
    for _ in range(100):
        random = "".join(secrets.choice(PARTIAL_ALPHABET) for _ in range(8))
        candidate = final.with_name(f".{final.name}.{random}{PARTIAL_SUFFIX}")
        if not os.path.lexists(candidate):
            return candidate
    raise ExportError(f"{final}: no free temporary name in {final.parent}", path=final)


@contextlib.contextmanager
def _atomic_target(final: Path) -> Iterator[Path]:
    """A temporary path beside ``final``, renamed onto it only if the block succeeds.

    The block creates the file, exclusively (the writer opens it with ``"w-"``): nothing
    exists under the temporary name before the ``try`` below is entered, so an
    exception at any point, KeyboardInterrupt and the CLI's signal exceptions included,
    finds the file it must remove (a placeholder made first, as ``mkstemp`` does, leaves
    a gap where an interrupt would leak it). Creating it afresh also matters for speed:
    truncating an existing file, even an empty one, makes ext4 flush it on close
    (auto_da_alloc), which doubled the cost of a large export. Leftovers of earlier
    exports to ``final`` whose process died without unwinding are removed first
    (:func:`remove_leftovers`).
    """
    remove_leftovers(final)
    temporary = _temporary_path(final)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, final)
    except BaseException as exc:
        # EEXIST: another process took the name in the moment since it was free; its file.
        if not (isinstance(exc, OSError) and exc.errno == errno.EEXIST):
            with contextlib.suppress(OSError):
                temporary.unlink()
        raise


def write_plan(plan: DatasetPlan, path: Path) -> Path:
    """Write ``plan`` to ``path`` atomically; return the path."""
    try:
        with _atomic_target(path) as temporary:
            _write(plan, temporary)
    except ExportError:
        raise
    except OSError as exc:
        # h5py's strerror is HDF5's whole error stack; the errno's text is what matters.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            message = f"{path}: cannot write into {path.parent} ({reason})"
        else:
            message = f"{path}: the export could not be written ({reason})"
        raise ExportError(message, path=path) from exc
    except (ValueError, TypeError) as exc:
        raise ExportError(
            f"{path}: the run cannot be written as netCDF ({exc})", path=path
        ) from exc
    return path


def write_bytes_atomically(path: Path, content: bytes) -> Path:
    """Write a small file (a sync record, a sync state) by the exports' rule: under a
    temporary name beside it, fsynced, then renamed onto ``path``, so that a reader (or
    the next start after a crash) finds the old content or the new, never a part."""
    try:
        with _atomic_target(path) as temporary, open(temporary, "xb") as handle:
            handle.write(content)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ExportError(f"{path}: cannot be written ({reason})", path=path) from exc
    return path
