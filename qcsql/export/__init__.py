"""Export a run to the xarray-compatible HDF5 (netCDF4) file a QCoDeS export would be.

``qcodes_<captured_run_id>_<guid>.nc`` by default, as QCoDeS names its exports.
The layouts of large sweeps are streamed (:mod:`qcsql.export.streamed`): the file's
structure is written first and the rows go from the page readers straight into
it, so memory does not grow with the run. Everything else, and every stream that
gives up part-way, is laid out in memory by :func:`qcsql.export.layout.plan_run`.

Where an export goes (:func:`export_target`) follows one stated rule rather than a guess:
a folder is an existing folder or a path (a ``str``) ending in a path separator, which is
created; anything else is a file and must end in ``.nc``, ``.h5`` or ``.hdf5``, so that a
mistyped folder name is refused instead of becoming a file of that name.
"""
