"""Configuration: typed dataclasses filled from YAML and ``--set key=value`` overrides.

One mechanism for every command. A config class is a dataclass whose fields have defaults; nested
sections are dataclasses too. Loading checks every key and type and names the bad key together with
the valid ones. Every YAML evosearch reads (configs, task files, graph files, run directories, ``--set``
values) goes through :func:`parse_yaml`: safe tags only, so a file never executes code, and plain YAML
only, so a few hundred bytes never expand to gigabytes.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from evosearch.errors import EvosearchError, brief, listing, one_line, shorten

T = TypeVar("T")
CONFIG_SUFFIXES = (".yaml", ".yml")
# Bounds on the YAML evosearch reads. Its own files are kilobytes and a few levels deep.
MAX_YAML_CHARS = 1 << 20
MAX_YAML_DEPTH = 50
# An integer setting beyond 64 bits means nothing to torch, numpy or Ray (they would overflow on it).
MAX_CONFIG_INT = 2**63 - 1
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(EvosearchError):
    """A configuration file or override is malformed, unknown, or of the wrong type."""


def parse_yaml(text: str, source: str) -> Any:
    """The data of YAML ``text`` (from ``source``, which messages name): :class:`ConfigError` for
    text that is too large, malformed, or not plain YAML."""
    try:
        return _load_plain_yaml(text, source)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: malformed YAML: {shorten(one_line(e), 300)}") from None


def load_yaml(path: str | Path, kind: str = "config") -> Any:
    """The data of the YAML file ``path`` (a ``kind`` file, as messages call it), read through
    :func:`parse_yaml`; only the first :data:`MAX_YAML_CHARS` (and one more) characters are read."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_YAML_CHARS + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {kind} file {path}: {one_line(e)}") from None
    return parse_yaml(text, str(path))


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["probes.seed=3", "search.ops=[add, mul]"]`` → a nested dict; values parsed as YAML, and
    a value that is not YAML taken as the string it is."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {brief(pair)}")
        try:
            value = _load_plain_yaml(text, f"--set {shorten(key.strip())}") if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {shorten(key)}: {brief(part)} is set to a value and has no keys")
        node[leaf] = value
    return out


def _load_plain_yaml(text: str, source: str) -> Any:
    """Compose, check that the nodes form a shallow tree, then construct (a ``yaml.YAMLError`` for
    malformed text is the caller's). libyaml composes where installed: it is fast, and refuses
    nesting past 1,000 levels before its cost grows."""
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(f"{source}: larger than {MAX_YAML_CHARS} characters, more than any evosearch file")
    loader = _SAFE_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_plain(node, _Where(source, one_line="\n" not in text.strip()))
        return loader.construct_document(node)
    except RecursionError:  # the pure-Python composer, where libyaml is not installed
        raise ConfigError(f"{source}: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits: the part before "; use sys..."
        raise ConfigError(f"{source}: a value cannot be read: {shorten(str(e).split(';')[0], 120)}") from None
    finally:
        loader.dispose()


@dataclasses.dataclass(frozen=True)
class _Where:
    """Where in the text a problem is, as messages say it: the source, and the line where the text
    has several."""

    source: str
    one_line: bool

    def __call__(self, mark: yaml.Mark) -> str:
        return self.source if self.one_line else f"{self.source}, line {mark.line + 1}"


def _check_plain(root: yaml.Node, where: _Where) -> None:
    """Refuse aliases and deep nesting in a composed document.

    An alias makes one node a child of several, so nine levels of them in 368 bytes are a billion
    strings to whatever walks the data (7 GB, then a crash); evosearch's files never need them. The
    walk visits each node once, so it costs what the text does.
    """
    seen: set[int] = set()
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            repeated = "a node here is repeated by an alias (*name); aliases are not allowed"
            raise ConfigError(f"{where(node.start_mark)}: {repeated}")
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{where(node.start_mark)}: nested deeper than {MAX_YAML_DEPTH} levels")
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend((child, depth + 1) for pair in node.value for child in pair)


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: overrides win, nested mappings merge key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build the dataclass ``cls`` from plain data, checking keys and types."""
    label = where or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(_key_text(k) for k in data if k not in fields)
    if unknown:
        bad = listing(_join(where, k) for k in unknown)
        raise ConfigError(
            f"unknown key {bad}; valid keys{' of ' + where if where else ''}: {', '.join(fields)}"
        )
    values = {name: _convert(hints[name], data[name], _join(where, name)) for name in fields if name in data}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{label}: {e}") from None


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, numbers, strings) for YAML or JSON; an enum member becomes its value."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj) if isinstance(obj, (set, frozenset)) else obj
        return [to_dict(v) for v in items]
    return obj


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults, then the file (if any), then ``--set`` overrides: the resolved config."""
    data = load_yaml(path) if path is not None else {}
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return from_dict(cls, merge(data, parse_overrides(overrides)))


def shipped_configs() -> Path:
    """The repository's ``configs/`` as installed: pyproject.toml ships it as the package
    ``evosearch.configs``, so an editable install and a wheel find it the same way. A checkout that
    is imported without being installed (on ``PYTHONPATH``, or a Ray job's ``--working-dir`` copy,
    which shadows the installed package) has it beside ``evosearch/``."""
    try:
        return Path(resources.files("evosearch.configs"))  # pip installs packages as files: a directory
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[1] / "configs"


def config_names(folder: Path) -> list[str]:
    """The configs of ``folder`` by name: the stems of its YAML files, sorted."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def config_path(name_or_path: str | Path, folder: Path, kind: str) -> Path:
    """The file a config name or path refers to: a bare name (no folder, no suffix, not a file here)
    names ``folder/<name>.yaml``; anything else is a path. :class:`ConfigError` lists the names."""
    path = Path(name_or_path)
    if path.name != str(name_or_path) or path.suffix in CONFIG_SUFFIXES or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{kind} file not found: {path}")
        return path
    shipped = folder / f"{path.name}.yaml"
    if not shipped.is_file():
        names = ", ".join(config_names(folder))
        raise ConfigError(f"unknown {kind} {brief(path.name)}; {kind}s: {names}, or a .yaml file")
    return shipped


def with_overrides(config: T, overrides: Sequence[str]) -> T:
    """``config`` with ``--set`` overrides on top, checked as those of a loaded config are."""
    return from_dict(type(config), merge(to_dict(config), parse_overrides(overrides)))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _key_text(key: Any) -> str:
    """A key of user data as messages show it: a string shortened, anything else briefly repr'd."""
    return shorten(key, 40) if isinstance(key, str) else brief(key, 40)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {brief(value)} fits none of {hint}")
    if typing.get_origin(hint) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, args))}, got {brief(value)}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (list, tuple, Sequence, frozenset, set):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {brief(value)}")
        item = args[0] if args else Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return (origin if origin in (tuple, frozenset, set) else list)(items)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {brief(value)}")
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): _convert(value_type, v, f"{where}.{_key_text(k)}") for k, v in value.items()}
    return _scalar(hint, value, where)


def _scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {brief(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {brief(value)}")
        if not -MAX_CONFIG_INT <= value <= MAX_CONFIG_INT:
            raise ConfigError(f"{where} is out of range: {brief(value)} (at most {MAX_CONFIG_INT} in size)")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {brief(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(f"{where} is too large a number: {brief(value)}") from None
        if math.isnan(number):  # every comparison with NaN is false: a check on it would pass silently
            raise ConfigError(f"{where} must be a number, got .nan")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {brief(value)}")
        return value
    raise ConfigError(f"{where}: unsupported config type {hint!r}")
