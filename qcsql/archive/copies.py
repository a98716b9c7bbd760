"""Which files of an archive are byte-for-byte copies of each other (backups, files
copied between PCs): those are read once, and the entries and checksums of one are the
others'. Reads files through the kept descriptors only; imports no database reader.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container, Sequence
from pathlib import Path

from qcsql.sqlite.descriptors import kept_file
from qcsql.sqlite.files import side_file

__all__ = ["byte_groups", "same_bytes"]


def byte_groups(
    files: Sequence[tuple[str, int, int | None]],
    labels: dict[str, str],
    side_files: Container[str],
) -> dict[str, list[str]]:
    """``files`` (path, size, size of its ``-wal``) grouped by their bytes: the first of
    each group (in the order given) maps to the others (an unmatched file maps to none).
    Only files of equal sizes are compared (:func:`same_bytes`);
    ``labels`` keeps, by path, the first file of each group found, so that files already
    compared are not read again. A WAL file with a ``-shm`` is never grouped (a writer
    may be changing it while the other is read), nor a file with a ``-journal`` beside it
    (a hot journal changes what SQLite reads of that file alone): ``side_files`` holds the
    paths of the side files there are (as the walk found them,
    :attr:`~qcsql.archive.discover.Discovery.stats`)."""
    by_size: dict[tuple[int, int | None], list[str]] = defaultdict(list)
    for path, size, wal_size in files:
        shared = (wal_size is not None and f"{path}-shm" in side_files) or (
            f"{path}-journal" in side_files
        )
        key = (-1 - len(by_size), None) if shared else (size, wal_size)
        by_size[key].append(path)
    groups: dict[str, list[str]] = {}
    for paths in by_size.values():
        if len(paths) == 1:
            groups[paths[0]] = []
            continue
        if any(path not in labels for path in paths):
            named = {Path(path): path for path in paths}
            for part in same_bytes(list(named)):
                for member in part:
                    labels[named[member]] = named[part[0]]
        by_label: dict[str, list[str]] = defaultdict(list)
        for path in paths:
            by_label[labels[path]].append(path)
        for same in by_label.values():
            groups[same[0]] = same[1:]
    return groups


# Bytes compared at a time, over every file of a group of equal sizes together: at most
# this much a file, and less where a group holds so many that their chunks would pass
# :data:`GROUP_CHUNKS_BYTES` (each file's chunk and one copy of each distinct chunk).
FILE_CHUNK = 1 << 20
GROUP_CHUNKS_BYTES = 32 << 20
LEAST_CHUNK = 1 << 16


def same_bytes(files: Sequence[Path]) -> list[list[Path]]:
    """``files`` partitioned by their bytes and those of their ``-wal`` (where one is
    beside them), in the order given: files in one part are byte-for-byte the same, so
    they hold the same runs with the same data and the checksums of one are the
    others'. The files are read through the kept descriptors
    (:mod:`qcsql.sqlite.descriptors`) chunk by chunk, all together, and compared rather
    than hashed: comparing equal chunks costs a twentieth of SHA-256 over them, a chunk
    that differs is told at its first differing byte, a file is read no further once it
    is alone in its part, and no digest can ever collide. A file that cannot be read is
    a part of its own (whoever reads it next reports why)."""
    parts: list[list[Path]] = []
    streams: list[_Stream] = []
    for path in files:
        try:
            streams.append(_Stream(path))
        except OSError:
            parts.append([path])
    # One chunk size for the whole call: a group's chunks are held together.
    chunk = max(LEAST_CHUNK, min(FILE_CHUNK, GROUP_CHUNKS_BYTES // (2 * max(1, len(streams)))))
    try:
        pending = [streams] if streams else []
        while pending:
            group = pending.pop()
            if len(group) == 1 or group[0].done():
                parts.append([stream.path for stream in group])
                for stream in group:
                    stream.release()
                continue
            by_chunk: list[tuple[tuple[int, int, int, bytes] | None, list[_Stream]]] = []
            for stream in group:
                data = stream.next_chunk(chunk)
                for seen, members in by_chunk:
                    if seen == data:
                        members.append(stream)
                        break
                else:
                    by_chunk.append((data, [stream]))
            pending.extend(members for _, members in reversed(by_chunk))
    finally:
        for stream in streams:
            stream.release()
    order = {path: at for at, path in enumerate(files)}
    parts.sort(key=lambda part: order[part[0]])
    return parts


class _Stream:
    """The bytes of a database file followed by those of its ``-wal``, read in chunks
    tagged with their part, the number of parts and the part's size: two streams whose
    chunks compared equal so far are at the same place of parts of the same sizes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.parts = [kept_file(path)]
        wal = side_file(path, "-wal")
        if wal.exists():
            self.parts.append(kept_file(wal))
        self.sizes = [part.size() for part in self.parts]
        self.part = 0
        self.offset = 0

    def done(self) -> bool:
        return self.part >= len(self.parts)

    def next_chunk(self, size: int) -> tuple[int, int, int, bytes] | None:
        """The next ``size`` bytes at most (None at the end), after their part, the number
        of parts and the part's size (so that streams compared equal so far also end
        together; tuples compare their bytes with one ``memcmp``). An unreadable file
        gives a chunk no other file gives."""
        if self.done():
            return None
        part, part_size = self.part, self.sizes[self.part]
        try:
            data = self.parts[part].read(min(size, part_size - self.offset), self.offset)
        except OSError:
            self.part = len(self.parts)
            return (-1, -1, -1, b"unreadable " + str(self.path).encode())
        self.offset += len(data)
        if len(data) < size or self.offset >= part_size:
            self.part += 1
            self.offset = 0
        return (part, len(self.parts), part_size, data)

    def release(self) -> None:
        """Done with the file (its descriptors stay kept, see :func:`kept_file`)."""
        for part in self.parts:
            part.release()
        self.parts = []
