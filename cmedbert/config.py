"""Config files (TOML / YAML / JSON) plus ``key=value`` overrides -> typed dataclasses.

A stage's config is a (possibly nested) dataclass. Fields are documented with
``field(metadata={"help": ...})`` and name their units. Loading is strict: an unknown key or a
missing required key is an error that names the key and where it came from.

    cfg = load_config(CorpusConfig, "configs/corpus/demo.toml", ["dedup.threshold=0.8"])
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

from cmedbert import paths
from cmedbert.errors import ConfigError

T = TypeVar("T")

MISSING = dataclasses.MISSING


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"config file {path}:{line}: not UTF-8 (byte {raw[exc.start]:#04x}); save it as UTF-8") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = _load_yaml(text, path)
        elif suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"config file {path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        else:
            raise ConfigError(f"config file {path}: unknown format {suffix!r} (use .toml, .yaml or .json)")
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(f"config file {path}: nested too deeply") from None
    except Exception as exc:  # parser errors carry line numbers; keep them (on one line)
        raise ConfigError(f"config file {path}: cannot parse: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a table/mapping")
    return data


YAML_MAX_VALUES = 100_000  # a config has hundreds; aliases must not expand one into millions


def _load_yaml(text: str, path: Path) -> Any:
    """yaml.safe_load, but the node graph is checked before any Python object is built: an
    alias that refers to its own ancestor (a circular document) or aliases that expand to more
    than YAML_MAX_VALUES values (an "alias bomb": a few hundred bytes that expand to gigabytes
    when the config is copied) are refused."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        _check_yaml_graph(node, path)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = ", ".join(x for x in (exc.context, exc.problem) if x)
        raise ConfigError(f"config file {path}: {where}invalid YAML ({what})") from None
    finally:
        loader.dispose()


def _check_yaml_graph(root: Any, path: Path) -> None:
    import yaml

    def children(node: Any) -> list[Any]:
        if isinstance(node, yaml.MappingNode):
            return [x for pair in node.value for x in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    size: dict[int, int] = {}  # id(node) -> values it expands to (done)
    open_: set[int] = set()  # on the current path
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        if leaving:
            open_.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children(node))
            if size[key] > YAML_MAX_VALUES:
                raise ConfigError(f"config file {path}: line {node.start_mark.line + 1}: aliases expand this "
                                  f"document to more than {YAML_MAX_VALUES} values (an alias bomb?)")
            continue
        if key in size:
            continue
        open_.add(key)
        stack.append((node, True))
        for child in children(node):
            if id(child) in open_:
                raise ConfigError(f"config file {path}: line {child.start_mark.line + 1}: circular alias "
                                  "(an anchor used inside itself)")
            if id(child) not in size:
                stack.append((child, False))


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=1`` -> (["a", "b"], 1). Values are parsed as TOML literals when possible
    (numbers, booleans, quoted strings, arrays, inline tables), else kept as plain strings."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    return key.split("."), _parse_literal(raw.strip())


def _parse_literal(raw: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except Exception:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted ``key=value`` overrides applied."""
    data = json.loads(json.dumps(data, default=str))  # deep copy of plain data
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not a table")
            node = nxt
        node[keys[-1]] = value
    return data


def deep_merge(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """A new dict: later layers win, nested tables merge key by key, values are deep copies."""
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from plain data, strictly: unknown or missing keys are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key {where or '<root>'!r} must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        full = [f"{where}.{k}" if where else k for k in unknown]
        raise ConfigError(
            f"unknown config key {', '.join(repr(k) for k in full)} "
            f"(known: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], key)
        elif f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
            raise ConfigError(f"missing config key {key!r}: {f.metadata.get('help', 'required')}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    if not where:  # the whole tree, after the stages' own checks (which word their limits better)
        _check_non_negative(obj, "")
    return obj


def _check_non_negative(value: Any, key: str) -> None:
    """No number in any stage's config is meaningfully negative (sizes, counts, rates, learning
    rates, fractions, seeds, ports, timeouts): refuse one here, for every stage, before any work.
    Stage ``validate`` methods add the finer bounds (positive, <= 1, divides, ...)."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            _check_non_negative(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_non_negative(v, f"{key}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_non_negative(v, f"{key}.{k}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"config key {key!r}: must be >= 0, got {value!r}")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key {key!r}: bad value {value!r}")
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a table, got {value!r}")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _coerce(val_tp, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
    if tp is int:
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or int(value) != value):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"config key {key!r}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return str(value)
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> T:
    """Load ``cls`` from an optional ``base`` dict, then an optional file, then overrides.

    The path rule (:mod:`cmedbert.paths`): relative paths in the file's path fields become
    absolute against the file's folder; relative paths in overrides stay relative to the current
    folder; the retired ``$SHARED`` spelling is refused, naming the key."""
    data: dict[str, Any] = dict(base or {})
    from_file = read_config_file(path) if path is not None else {}
    try:
        if path is not None:
            data.update(map_paths(cls, from_file, lambda v, kind, key: paths.anchor(v, Path(path).parent, kind, key)))
        data = apply_overrides(data, list(overrides or []))
        map_paths(cls, data, lambda v, kind, key: paths.check_spelling(v, key) or v)
        return from_dict(cls, data)
    except ConfigError as exc:
        src = f" (config {path})" if path else ""
        raise ConfigError(f"{exc}{src}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (Paths become strings)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def config_hash(cfg: Any, cls: type | None = None) -> str:
    """The identity of a resolved config: a stable short hash (sha256 of canonical JSON, 16 hex
    chars) of every field that changes the output. Fields marked
    ``metadata={"affects_output": False}`` (progress bars, worker counts, logging, wandb) are left
    out, so changing them keeps the hash. ``cfg`` is a config dataclass, or its plain data with
    ``cls`` naming the dataclass (e.g. a manifest's ``config``); plain data without ``cls`` is
    hashed whole. Every stage's reuse / identity check goes through this one function."""
    if cls is None and dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        cls = type(cfg)
    data = cfg if isinstance(cfg, dict) else to_dict(cfg)
    if cls is not None:
        data = output_fields(data, cls)
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def map_paths(cls: type, data: dict[str, Any], fn: Any, where: str = "") -> dict[str, Any]:
    """A copy of ``data`` (plain data of config class ``cls``) with ``fn(value, kind, key)``
    applied to every string in a path field (``metadata={"path": kind}``), through nested config
    dataclasses, lists and tables of them."""
    if not isinstance(data, dict) or not dataclasses.is_dataclass(cls):
        return data
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key = f"{where}.{f.name}" if where else f.name
        kind = f.metadata.get("path")
        out[f.name] = _map_path_value(data[f.name], kind, key, fn) if kind else \
            _map_nested(data[f.name], hints[f.name], fn, key)
    return out


def _map_path_value(value: Any, kind: str, key: str, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value, kind, key)
    if isinstance(value, list):
        return [_map_path_value(v, kind, f"{key}[{i}]", fn) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _map_path_value(v, kind, f"{key}.{k}", fn) for k, v in value.items()}
    return value


def _map_nested(value: Any, tp: Any, fn: Any, key: str) -> Any:
    args = [a for a in get_args(tp) if a is not type(None)]
    if dataclasses.is_dataclass(tp):
        return map_paths(tp, value, fn, key)
    dcs = [a for a in args if dataclasses.is_dataclass(a)]
    if get_origin(tp) in (Union, types.UnionType) and len(dcs) == 1:
        return map_paths(dcs[0], value, fn, key)
    if get_origin(tp) is list and args and isinstance(value, list):
        return [_map_nested(v, args[0], fn, f"{key}[{i}]") for i, v in enumerate(value)]
    if get_origin(tp) is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _map_nested(v, args[1], fn, f"{key}.{k}") for k, v in value.items()}
    return value


def affects_output(f: dataclasses.Field) -> bool:
    """False for a field marked ``metadata={"affects_output": False}``."""
    return bool(f.metadata.get("affects_output", True))


def output_fields(data: dict[str, Any], cls: type) -> dict[str, Any]:
    """``data`` (plain data of config class ``cls``) without the fields that do not change the
    output, recursively through nested config dataclasses (also inside lists and tables)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data or not affects_output(f):
            continue
        out[f.name] = _output_value(data[f.name], hints[f.name])
    extra = {k: v for k, v in data.items() if k not in {f.name for f in dataclasses.fields(cls)}}
    return {**out, **extra}  # keys the class does not know (an older manifest) still count


def _output_value(value: Any, tp: Any) -> Any:
    if isinstance(value, dict) and dataclasses.is_dataclass(tp):
        return output_fields(value, tp)
    args = [a for a in get_args(tp) if a is not type(None)]
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        dcs = [a for a in args if dataclasses.is_dataclass(a)]
        return output_fields(value, dcs[0]) if len(dcs) == 1 and isinstance(value, dict) else value
    if origin is list and args and isinstance(value, list):
        return [_output_value(v, args[0]) for v in value]
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _output_value(v, args[1]) for k, v in value.items()}
    return value


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every field, recursively: used by ``--help`` listings."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, key + "."))
            continue
        if f.default is not MISSING:
            default = repr(f.default)
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "(required)"
        rows.append((key, default, f.metadata.get("help", "")))
    return rows
