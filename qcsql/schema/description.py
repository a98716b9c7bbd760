"""What a run measured: its parameters, how they relate, and the shapes it expected.

QCoDeS has stored this in four JSON layouts (run_description versions 0-3),
one buggy unreleased one ('4a'), and, before schema 3, only in the ``layouts``
and ``dependencies`` tables. Every source is normalised into one
:class:`RunDescription`, whose parameter graph keeps QCoDeS' node order, so
the derived notions (top-level parameters, trees, legacy ParamSpecs) come out
in the order QCoDeS itself produces.

Parsing raises :class:`ValueError` with a precise reason; the caller (which
knows the file and run) turns it into a :class:`~qcsql.errors.RunDescriptionError`.

Declared shapes are kept as QCoDeS keeps them (``tuple`` of whatever the JSON
held), because QCoDeS gives even absurd ones a meaning: it reshapes with
``tuple(int(s) for s in shape)`` when ``np.prod`` of that equals the data's size,
and lays a dataset out directly only when the data's shape ``==`` the stored
tuple. A shape whose entries ``int()`` refuses fails only the parameter it
belongs to (QCoDeS' ``get_parameter_data`` of it raises), so it is recorded in
:attr:`RunDescription.shape_problems` instead of failing the whole description.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "DescriptionSource",
    "InterDependencies",
    "LayoutRow",
    "ParamSpec",
    "ParamSpecBase",
    "RunDescription",
    "description_from_columns",
    "description_from_layouts",
    "parse_run_description",
]

DescriptionSource = Literal["run_description", "layouts", "results_table", "none"]
PARAMTYPES = ("array", "numeric", "text", "complex")  # QCoDeS' ParamSpecBase.allowed_types
MAX_DIMS = 64  # numpy's limit: a reshape to more dimensions fails
_DEPENDS_ON = "depends_on"
_INFERRED_FROM = "inferred_from"


class ParamSpecBase(BaseModel):
    """One parameter: a column of the run's results table."""

    model_config = ConfigDict(frozen=True)

    name: str
    paramtype: str
    label: str = ""
    unit: str = ""


class ParamSpec(ParamSpecBase):
    """A parameter with its relations, as QCoDeS' legacy ``ds.paramspecs`` gives it."""

    depends_on: tuple[str, ...] = ()
    inferred_from: tuple[str, ...] = ()


class InterDependencies(BaseModel):
    """The parameter graph of a run, in QCoDeS' node order.

    ``dependencies`` maps a dependent to its setpoints (axis order),
    ``inferences`` an inferred parameter to its basis; both list their keys in
    node order, as QCoDeS' graph iterates them.
    """

    model_config = ConfigDict(frozen=True)

    parameters: dict[str, ParamSpecBase]
    dependencies: dict[str, tuple[str, ...]]
    inferences: dict[str, tuple[str, ...]]

    @classmethod
    def build(
        cls,
        parameters: Mapping[str, ParamSpecBase],
        dependencies: Iterable[tuple[str, Sequence[str]]],
        inferences: Iterable[tuple[str, Sequence[str]]],
        standalones: Iterable[str],
    ) -> InterDependencies:
        """Add edges and nodes in the order QCoDeS' ``InterDependencies_`` constructor does."""
        nodes: dict[str, ParamSpecBase] = {}
        edges: dict[str, dict[str, str]] = {}

        def node(name: str) -> None:
            if name not in parameters:
                raise ValueError(f"parameter {name!r} is related to others but not described")
            nodes.setdefault(name, parameters[name])
            edges.setdefault(name, {})

        for kind, relation in ((_DEPENDS_ON, dependencies), (_INFERRED_FROM, inferences)):
            for source, targets in relation:
                node(source)
                for target in targets:
                    node(target)
                for target in targets:
                    edges[source][target] = kind
        for name in standalones:
            node(name)
        by_kind: dict[str, dict[str, tuple[str, ...]]] = {_DEPENDS_ON: {}, _INFERRED_FROM: {}}
        for source in nodes:
            for kind, tree in by_kind.items():
                targets = tuple(t for t, k in edges[source].items() if k == kind)
                if targets:
                    tree[source] = targets
        return cls(
            parameters=nodes,
            dependencies=by_kind[_DEPENDS_ON],
            inferences=by_kind[_INFERRED_FROM],
        )

    @property
    def standalones(self) -> tuple[str, ...]:
        """Parameters related to nothing (QCoDeS: graph nodes of degree 0)."""
        related = set(self.dependencies) | set(self.inferences)
        related.update(t for targets in self.dependencies.values() for t in targets)
        related.update(t for targets in self.inferences.values() for t in targets)
        return tuple(name for name in self.parameters if name not in related)

    def _reachable(self, name: str, *, backwards: bool) -> set[str]:
        """Everything reachable from ``name`` along inference edges in one direction."""
        step: dict[str, set[str]] = {}
        for source, targets in self.inferences.items():
            for target in targets:
                frm, to = (target, source) if backwards else (source, target)
                step.setdefault(frm, set()).add(to)
        seen: set[str] = set()
        todo = [name]
        while todo:
            for other in step.get(todo.pop(), ()):
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return seen

    def tree(self, name: str) -> set[str]:
        """QCoDeS' ``find_all_parameters_in_tree``: ``name``, its setpoints, and the
        inference ancestors and descendants of each of those (one pass, as QCoDeS does)."""
        collected = {name}
        pending = [name]
        while pending:  # setpoints, transitively (QCoDeS rejects chains, but be safe)
            for setpoint in self.dependencies.get(pending.pop(), ()):
                if setpoint not in collected:
                    collected.add(setpoint)
                    pending.append(setpoint)
        for member in tuple(collected):
            collected |= self._reachable(member, backwards=False)
            collected |= self._reachable(member, backwards=True)
        return collected

    def tree_by_group(self, name: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """``(name, setpoints in axis order, other tree members sorted by name)``."""
        setpoints = self.dependencies.get(name, ())
        others = sorted(self.tree(name) - {name} - set(setpoints))
        return name, setpoints, tuple(others)

    @property
    def top_level_parameters(self) -> tuple[str, ...]:
        """The parameters QCoDeS returns data for, sorted by name."""
        setpoints = {t for targets in self.dependencies.values() for t in targets}
        inferred_targets = {t for targets in self.inferences.values() for t in targets}
        dependency_nodes = set(self.dependencies) | setpoints
        inference_nodes = set(self.inferences) | inferred_targets
        dependency_top = {n for n in dependency_nodes if n not in setpoints} - set(self.inferences)
        inference_top = {n for n in inference_nodes if n not in inferred_targets}
        in_dependency_trees = set().union(*(self.tree(n) for n in dependency_top))
        tops = dependency_top | (inference_top - in_dependency_trees) | set(self.standalones)
        return tuple(sorted(tops))

    def legacy_paramspecs(self) -> tuple[ParamSpec, ...]:
        """QCoDeS' ``new_to_old``: setpoints first, then bases, then every node in node order."""
        order: dict[str, None] = {}
        for targets in (*self.dependencies.values(), *self.inferences.values()):
            order.update(dict.fromkeys(targets))
        order.update(dict.fromkeys(self.parameters))
        return tuple(
            ParamSpec(
                **self.parameters[name].model_dump(),
                depends_on=self.dependencies.get(name, ()),
                inferred_from=self.inferences.get(name, ()),
            )
            for name in order
        )


class RunDescription(BaseModel):
    """A run's normalised description and where it came from."""

    model_config = ConfigDict(frozen=True)

    version: int
    interdependencies: InterDependencies
    # The shapes QCoDeS reshapes to, ``tuple(int(s) for s in declared)``, of every entry
    # whose values int() accepts; None when the run declares no shapes at all.
    shapes: dict[str, tuple[int, ...]] | None = None
    source: DescriptionSource = "run_description"
    # Each entry as QCoDeS holds it: ``tuple()`` of the stored JSON value (so the text
    # "65" is ('6', '5')), for QCoDeS' ``==`` with the data's shape and for re-serialising.
    declared_shapes: dict[str, tuple[Any, ...]] | None = None
    # Entries whose values int() refuses (a nested list, null, "a", NaN): why.
    shape_problems: dict[str, str] = {}

    @property
    def paramspecs(self) -> dict[str, ParamSpec]:
        return {spec.name: spec for spec in self.interdependencies.legacy_paramspecs()}

    def reshape_to(self, name: str) -> tuple[int, ...] | None:
        """The shape QCoDeS' ``get_parameter_data`` reshapes ``name``'s data to, when its
        size equals ``np.prod`` of it (see :func:`qcodes_size`); :class:`ValueError` when
        QCoDeS fails on the declared shape (its ``int()`` of an entry raises)."""
        problem = self.shape_problems.get(name)
        if problem is not None:
            raise ValueError(problem)
        return (self.shapes or {}).get(name)

    def direct_shape(self, name: str) -> tuple[int, ...] | None:
        """The declared shape if QCoDeS' export can compare equal to it (``data.shape ==
        declared``: entries that are integers, or floats and booleans equal to one), else
        None: ``(6.9, 5.9)`` reshapes the data to ``(6, 5)`` but never lays it out directly."""
        declared = (self.declared_shapes or {}).get(name)
        shape = (self.shapes or {}).get(name)
        if declared is None or shape is None or name in self.shape_problems:
            return None
        return shape if declared == shape else None


def qcodes_size(shape: tuple[int, ...]) -> int | float:
    """``np.prod(shape)`` exactly as QCoDeS computes it to decide whether to reshape: in
    int64 when the entries fit (so ``(2**32, 2**32)`` wraps to 0), in float64 beside an
    entry of uint64 size (perhaps inf), as Python integers beside a larger one. qcsql
    compares the data's size with this, not with the true product, so that it reshapes
    (or fails to) where QCoDeS does."""
    import numpy as np  # only for shapes: listing runs needs no numpy

    with np.errstate(all="ignore"):
        product = np.prod(shape)
    value: int | float = product.item() if isinstance(product, np.generic) else product
    return value


def shape_is_sane(shape: tuple[int, ...]) -> bool:
    """Whether ``reshape(shape)`` of an array of ``qcodes_size(shape)`` values works: no
    negative entry (numpy reads one as "infer", two as an error), a product that did not
    wrap around, and not more dimensions than numpy allows."""
    return (
        len(shape) <= MAX_DIMS
        and all(n >= 0 for n in shape)
        and qcodes_size(shape) == math.prod(shape)
    )


EMPTY_INTERDEPENDENCIES = InterDependencies(parameters={}, dependencies={}, inferences={})


def empty_description(source: DescriptionSource) -> RunDescription:
    return RunDescription(version=0, interdependencies=EMPTY_INTERDEPENDENCIES, source=source)


# -- parsing the stored JSON ------------------------------------------------------------------


def _names(value: Any, what: str) -> tuple[str, ...]:
    """A list of names; the 2->3 upgrade's first attempt stored comma-joined strings."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError(f"{what} must be a list of parameter names, not {value!r}")


def _paramspec_base(raw: Any, *, checked: bool = False) -> ParamSpecBase:
    """One parameter; ``checked``: its paramtype must be one QCoDeS allows (as QCoDeS'
    ParamSpecBase checks when it loads a stored run_description), since the readers pick
    the decoding of a column by it."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ValueError(f"a parameter must be an object with a 'name', not {raw!r:.80}")
    paramtype = raw.get("paramtype", raw.get("type"))
    if not isinstance(paramtype, str):
        raise ValueError(f"parameter {raw['name']!r} has no paramtype")
    if checked and paramtype.lower() not in PARAMTYPES:
        raise ValueError(
            f"parameter {raw['name']!r} has the paramtype {paramtype!r:.40}, "
            f"not one of {', '.join(PARAMTYPES)}"
        )
    return ParamSpecBase(
        name=raw["name"],
        paramtype=paramtype.lower(),
        label=raw.get("label") or "",
        unit=raw.get("unit") or "",
    )


def _from_paramspecs(raw_specs: Any, *, checked: bool = False) -> InterDependencies:
    """Old-style ``{"paramspecs": [...]}`` converted like QCoDeS' ``old_to_new``."""
    if not isinstance(raw_specs, list):
        raise ValueError("interdependencies.paramspecs must be a list")
    bases: dict[str, ParamSpecBase] = {}
    dependencies: list[tuple[str, tuple[str, ...]]] = []
    inferences: list[tuple[str, tuple[str, ...]]] = []
    plain: list[str] = []
    for raw in raw_specs:
        base = _paramspec_base(raw, checked=checked)
        bases[base.name] = base
        depends_on = _names(raw.get("depends_on"), f"{base.name}.depends_on")
        inferred_from = _names(raw.get("inferred_from"), f"{base.name}.inferred_from")
        if depends_on:
            dependencies.append((base.name, depends_on))
        if inferred_from:
            inferences.append((base.name, inferred_from))
        if not depends_on and not inferred_from:
            plain.append(base.name)
    referenced = {n for _, targets in (*dependencies, *inferences) for n in targets}
    standalones = [name for name in plain if name not in referenced]
    return InterDependencies.build(bases, dependencies, inferences, standalones)


def _from_new_style(raw: Any) -> InterDependencies:
    """New-style ``{"parameters", "dependencies", "inferences", "standalones"}``."""
    if not isinstance(raw, dict) or not isinstance(raw.get("parameters"), dict):
        raise ValueError("interdependencies_ must be an object with 'parameters'")
    bases = {name: _paramspec_base(spec, checked=True) for name, spec in raw["parameters"].items()}

    def relation(key: str) -> list[tuple[str, tuple[str, ...]]]:
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            raise ValueError(f"interdependencies_.{key} must be an object")
        return [(name, _names(targets, f"{key}.{name}")) for name, targets in value.items()]

    standalones = _names(raw.get("standalones") or [], "standalones")
    return InterDependencies.build(
        bases, relation("dependencies"), relation("inferences"), standalones
    )


_Shapes = tuple[dict[str, tuple[Any, ...]], dict[str, tuple[int, ...]], dict[str, str]]


def _shapes(raw: Any) -> _Shapes | None:
    """``(declared, as integers, problems)`` of a stored ``shapes`` object, as QCoDeS reads
    it: ``tuple()`` of each value when it loads the run (a value that is not iterable, or
    ``shapes`` that is not an object, fails the whole run there too), ``int()`` of each
    entry only when a parameter's data are reshaped."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"shapes must be an object or null, not {raw!r:.80}")
    declared: dict[str, tuple[Any, ...]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    problems: dict[str, str] = {}
    for name, shape in raw.items():
        if not isinstance(shape, (list, str, dict)):
            raise ValueError(f"shapes[{name!r}] must be a list of numbers, not {shape!r:.80}")
        declared[name] = tuple(shape)
        try:
            shapes[name] = tuple(int(n) for n in declared[name])
        except (TypeError, ValueError, OverflowError) as exc:
            problems[name] = (
                f"the declared shape {declared[name]!r:.80} of {name!r} is not a list of "
                f"integers ({exc})"
            )
    return declared, shapes, problems


def parse_run_description(text: str | bytes) -> RunDescription:
    """Normalise any stored run_description JSON (versions 0-3, '4a', future ones as 3)."""
    try:
        # Python's own json, as QCoDeS reads it: integers of any size stay integers (orjson
        # would turn 2**64 into a float), and NaN and Infinity are read as QCoDeS reads them.
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, deep nesting
        raise ValueError(f"run_description is not valid JSON ({exc!s:.200})") from exc
    if not isinstance(raw, dict):
        raise ValueError("run_description must be a JSON object")
    version = raw.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError(f"run_description has an invalid version {version!r}")
    if version >= 2 and "interdependencies_" in raw:
        interdependencies = _from_new_style(raw["interdependencies_"])
    else:
        old = raw.get("interdependencies")
        if not isinstance(old, dict):
            raise ValueError("run_description has no 'interdependencies'")
        if "parameters" in old:  # version 1, and the unreleased '4a' writer's version-less form
            interdependencies = _from_new_style(old)
        else:
            interdependencies = _from_paramspecs(old.get("paramspecs", []), checked=True)
    parsed = _shapes(raw.get("shapes")) if version >= 3 else None
    if parsed is None:
        return RunDescription(version=version, interdependencies=interdependencies)
    declared, shapes, problems = parsed
    return RunDescription(
        version=version,
        interdependencies=interdependencies,
        shapes=shapes,
        declared_shapes=declared,
        shape_problems=problems,
    )


# -- rebuilding from the legacy tables ---------------------------------------------------------


class LayoutRow(BaseModel):
    """One row of ``layouts``: a parameter of a run as QCoDeS < 0.2 recorded it."""

    model_config = ConfigDict(frozen=True)

    layout_id: int
    parameter: str
    label: str | None = None
    unit: str | None = None
    inferred_from: str | None = None


def description_from_layouts(
    layouts: Sequence[LayoutRow],
    dependencies: Sequence[tuple[int, int, int]],
    column_types: Mapping[str, str],
) -> RunDescription:
    """Rebuild the description exactly as QCoDeS' 2->3 and 3->4 upgrades do.

    ``dependencies`` are the run's ``(dependent, independent, axis_num)`` rows
    in storage order; ``column_types`` the declared types of the results
    table's columns. Independents come first, then dependents, then the rest,
    each in the order the upgrade's joins meet them.
    """
    if not layouts:
        return empty_description("layouts")
    by_id = {row.layout_id: row for row in layouts}
    known = [
        (dep, indep, axis) for dep, indep, axis in dependencies if dep in by_id and indep in by_id
    ]
    independents = [indep for _, indep, _ in known]
    dependents = [dep for dep, _, _ in known]
    rest = sorted(set(by_id) - set(independents) - set(dependents))
    setpoints_of: dict[int, list[int]] = {}
    for dep, indep, _ in sorted(known, key=lambda link: (link[0], link[2])):
        setpoints_of.setdefault(dep, []).append(indep)
    lowered_types = {name.lower(): kind for name, kind in column_types.items()}
    specs: list[dict[str, Any]] = []
    for layout_id in dict.fromkeys([*independents, *dependents, *rest]):
        row = by_id[layout_id]
        paramtype = lowered_types.get(row.parameter.lower())
        if paramtype is None:
            raise ValueError(
                f"layouts describe parameter {row.parameter!r}, "
                "but the results table has no such column"
            )
        specs.append(
            {
                "name": row.parameter,
                "paramtype": paramtype,
                "label": row.label or "",
                "unit": row.unit or "",
                "inferred_from": row.inferred_from.split(", ") if row.inferred_from else [],
                "depends_on": [by_id[i].parameter for i in setpoints_of.get(layout_id, [])],
            }
        )
    return RunDescription(
        version=0, interdependencies=_from_paramspecs(specs), shapes=None, source="layouts"
    )


def description_from_columns(column_types: Mapping[str, str]) -> RunDescription:
    """For files older than the ``layouts`` table (the 2017 prototypes): every column of the
    results table is a standalone parameter, typed by its declared type, so its data can be
    read. QCoDeS sees no parameters at all in such runs."""

    def paramtype(declared: str) -> str:
        declared = declared.lower()
        return declared if declared in ("array", "text", "complex") else "numeric"

    specs = [
        {"name": name, "paramtype": paramtype(kind), "label": "", "unit": ""}
        for name, kind in column_types.items()
        if name.lower() != "id"
    ]
    return RunDescription(
        version=0, interdependencies=_from_paramspecs(specs), shapes=None, source="results_table"
    )
