"""A run as xarray and pandas objects, without a file in between.

The same dataset plan the export writes (:mod:`qcsql.export.layout`, one set of layout
rules) becomes an ``xarray.Dataset`` here (:mod:`qcsql.xarray.convert`); pandas frames
follow QCoDeS' own, simpler rules (:mod:`qcsql.xarray.frames`); lazy arrays for the
``qcsql`` xarray engine read only the rows that are indexed (:mod:`qcsql.xarray.lazy`).
xarray, pandas and dask are imported by the functions that need them, never by
``import qcsql``.
"""
