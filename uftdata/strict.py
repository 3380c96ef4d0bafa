"""The strict loader: YAML -> frozen dataclasses, every problem at once (docs/design.md, "Recipes").

Generic over the schema: `uft_train.config` declares the recipe's dataclasses and its range and
combination checks; `uftdata.mixspec` reads the `mixture:` section. Both report `Problem`s, each at
a dotted key (`train.batch_size`), rendered by the project's one error formatter
(`uftdata.errors.error_line`) as `<file>: <key>: <what> (got <value>); expected <allowed>. <fix>`.
Unknown keys get a "did you mean" suggestion; `a.b.c=VALUE` overrides (VALUE read as YAML) edit the
mapping before it is read, so they get the same checks. A field with a bad value is reported and
left at its default, and its key is marked bad, so that later checks do not report a value nobody
wrote. This module imports no torch and nothing of `uft_train` (`uftdata` never does).

Why not pydantic (v2 is installed): its messages are its own ("Input should be a valid integer",
"Extra inputs are not permitted"), with no suggestion for an unknown key, and its default lax mode
reads `"16"` as 16 where a recipe must not. Rewriting each of its error types into the lines the
tests pin (and the "did you mean" search over the schema's keys) would cost about the ~120 lines of
converter it would replace, and add its import to `uft-train --dry-run`.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import math
import re
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args, get_origin

import yaml

from uftdata.problems import Problem, RecipeError

# --- the file and its overrides ------------------------------------------------------------------

def read_mapping(path: Path, sections: str) -> dict:
    """The YAML mapping in `path` (an empty file is an empty mapping); `sections` says what it should hold."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        problem = Problem("", f"cannot read the recipe ({' '.join(str(e).split())})")
        raise RecipeError([problem.line(str(path))]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        problem = Problem("", "is not a mapping of sections", type(data).__name__, sections)
        raise RecipeError([problem.line(str(path))])
    return data


_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")


def apply_overrides(data: dict, overrides: Sequence[str], section: str | None = None) -> list[Problem]:
    """Set each `a.b=value` (value parsed as YAML; a number indexes a list) in `data`, in place;
    returns the problems. With `section`, only keys under it may be set (`uftdata mix`: mixture)."""
    problems = []
    for text in overrides:
        parsed = _parse_override(text)
        if isinstance(parsed, Problem):
            problems.append(parsed)
        elif section is not None and parsed[0][0] != section:
            problems.append(Problem(f"override {text!r}", f"is not a {section} key: only the {section}: section "
                                    "is read here", expected=f"{section}.KEY=VALUE"))
        else:
            problems += _set(data, *parsed)
    return problems


def _parse_override(text: str) -> tuple[list[str], object] | Problem:
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(_PART.fullmatch(p) for p in parts):
        return Problem(f"override {text!r}", "is not KEY.PATH=VALUE", expected="e.g. loss.beta=0.1")
    try:
        return parts, yaml.safe_load(raw)
    except yaml.YAMLError:
        return Problem(f"override {text!r}", "its value is not valid YAML",
                       fix="Quote it for the shell, e.g. 'model.template=\"...\"'.")


def _set(data: dict, parts: list[str], value: object) -> list[Problem]:
    key = ".".join(parts)
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            return [Problem(".".join(parts[:i]) or key, f"cannot set {key}: not a mapping", node)]
        if not isinstance(node.get(part), (dict, list)):
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        return [Problem(key, "cannot be set: its parent is not a mapping", node)]
    return []


# --- mapping -> dataclasses ----------------------------------------------------------------------

Reader = Callable[[object, str], tuple[Any, list[Problem]]]  # (value, dotted key) -> (value, problems)


@dataclass(frozen=True)
class Schema:
    """A root dataclass, and a reader and a writer for each field type the converter does not know
    (the mixture section: a list of sources whose takes are `20k` or `0.5`)."""

    root: type
    readers: Mapping[type, Reader] = field(default_factory=dict)
    writers: Mapping[type, Callable[[Any], object]] = field(default_factory=dict)


class Built(NamedTuple):
    value: Any
    problems: list[Problem]
    bad: set[str]  # keys already reported: later checks skip them


def build(schema: Schema, data: dict) -> Built:
    """An instance of `schema.root` from `data`; every bad field reported and left at its default."""
    out = Built(None, [], set())
    return out._replace(value=_build(schema, schema.root, data, "", out))


def _build(schema: Schema, cls: type, data: object, key: str, out: Built) -> object:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        out.problems.append(Problem(key, "must be a mapping", data, f"keys {', '.join(f.name for f in fields(cls))}"))
        out.bad.add(key)
        return cls()
    hints = type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else str(name)
        if name not in hints:
            out.problems.append(_unknown_field(schema.root, sub, list(hints)))
            continue
        tp = hints[name]
        problems: list[Problem] = []
        reader = _reader(schema, tp)
        if reader is not None:
            kwargs[name], problems = reader(value, sub)
        elif isinstance(tp, type) and is_dataclass(tp):
            kwargs[name] = _build(schema, tp, value, sub, out)
        else:
            try:
                kwargs[name] = convert(value, tp)
            except Invalid as e:  # left at its default
                problems = [Problem(sub, e.what, value, e.expected, e.fix)]
        out.problems.extend(problems)
        if problems:
            out.bad.add(sub)
    return cls(**kwargs)


def _reader(schema: Schema, tp: object) -> Reader | None:
    return next((schema.readers[t] for t in (tp, *get_args(tp)) if t in schema.readers), None)


def read_field(section: Mapping, name: str, tp: object, default: object, key: str,
               problems: list[Problem]) -> Any:  # noqa: ANN401  # of the runtime type `tp`, which no annotation can name
    """`section[name]` as type `tp` (`default` when absent); if it is not, a problem and `default`."""
    if name not in section:
        return default
    try:
        return convert(section[name], tp)
    except Invalid as e:
        problems.append(Problem(key, e.what, section[name], e.expected, e.fix))
        return default


def unknown_key(key: str, allowed: Sequence[str], elsewhere: Sequence[str] = ()) -> Problem:
    """`key` is not one of `allowed` (names under its parent): a close name, else the same name at
    another dotted key of `elsewhere`, else the list of allowed keys."""
    parent, _, name = key.rpartition(".")
    prefix = f"{parent}." if parent else ""
    close = difflib.get_close_matches(name, list(allowed), n=1)
    if close:
        return Problem(key, f"unknown key; did you mean {prefix}{close[0]}?")
    moved = [k for k in elsewhere if k.rpartition(".")[2] == name]
    if moved:
        return Problem(key, f"unknown key here; did you mean {moved[0]}?")
    return Problem(key, "unknown key", expected=f"one of {', '.join(prefix + k for k in allowed)}")


def _unknown_field(root: type, key: str, allowed: list[str]) -> Problem:
    return unknown_key(key, allowed, leaf_keys(root))


# --- values ---------------------------------------------------------------------------------------

class Invalid(Exception):
    """A value that is not of its field's type: what is wrong, what was expected, the fix."""

    def __init__(self, what: str, expected: str = "", fix: str = "") -> None:
        super().__init__(what)
        self.what, self.expected, self.fix = what, expected, fix


def convert(value: object, tp: object) -> object:
    """`value` as type `tp` (a scalar, Literal, Optional or tuple of them), or `Invalid`."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return convert(value, inner)
        except Invalid as e:
            raise Invalid(e.what, f"{e.expected} or null" if e.expected else "", e.fix) from None
    if origin is Literal:
        if value in args and isinstance(value, str):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        raise Invalid("is not allowed", "one of " + ", ".join(args), f"Did you mean {close[0]}?" if close else "")
    if origin is tuple:
        return _tuple(value, tp)
    if isinstance(tp, type) and tp in _SCALARS:
        return _SCALARS[tp](value)
    raise TypeError(f"no YAML conversion for {tp!r}")  # a new field type: a bug here, not the user's


def _tuple(value: object, tp: object) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise Invalid("must be a list", type_name(tp))
    args = get_args(tp)
    items = args[:1] * len(value) if args[1:] == (Ellipsis,) else args
    if len(items) != len(value):
        raise Invalid(f"must have {len(items)} items", type_name(tp))
    try:
        return tuple(convert(v, t) for v, t in zip(value, items))
    except Invalid:
        raise Invalid("has an item of the wrong type", type_name(tp)) from None


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise Invalid("must be true or false", "a boolean")


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise Invalid("must be an integer", "a whole number")


def _str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise Invalid("must be a string", "text", "Quote it in the YAML.")


# PyYAML reads `3e-5` (no dot) as a string (YAML 1.1); a number written so is still a number.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _float(value: object) -> float:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
        raise Invalid("must be finite", "a number")
    raise Invalid("must be a number", "e.g. 0.01 or 3e-5")


_SCALARS: dict[type, Callable[[object], object]] = {bool: _bool, int: _int, float: _float, str: _str}


def type_name(tp: object) -> str:
    """How help and errors name a field type: `int or null`, `dpo | kto`, `a list of str`."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(args)
    if origin is tuple:
        if args[1:] == (Ellipsis,):
            return f"a list of {type_name(args[0])}"
        return f"a list of {len(args)} {type_name(args[0])}"
    return getattr(tp, "__name__", str(tp))


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key under the dataclass `cls`, in declaration order."""
    keys = []
    for f in fields(cls):
        tp = type_hints(cls)[f.name]
        keys += leaf_keys(tp, f"{prefix}{f.name}.") if isinstance(tp, type) and is_dataclass(tp) else [prefix + f.name]
    return keys


# --- dataclasses -> YAML --------------------------------------------------------------------------

def to_mapping(schema: Schema, obj: object) -> dict:
    """A plain YAML-able mapping (tuples as lists) that `build` reads back to `obj`."""
    out: dict[str, Any] = {}
    for f in fields(obj):  # type: ignore[arg-type]  # obj is a dataclass instance of the schema
        value = getattr(obj, f.name)
        if type(value) in schema.writers:
            out[f.name] = schema.writers[type(value)](value)
        elif is_dataclass(value):
            out[f.name] = to_mapping(schema, value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (chat templates) as `|` blocks, readable in a saved recipe."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def to_yaml(mapping: dict) -> str:
    """`mapping` as YAML, keys in their order (declaration order, for a `to_mapping` result)."""
    return yaml.dump(mapping, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


# --- help -----------------------------------------------------------------------------------------

@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, read from its source (empty if it has none).

    Attribute docstrings, because they sit where a reader of the schema looks and cost one line per
    field; `field(metadata={"help": ...})` would wrap every default in a call, and Python 3.11 has no
    `field(doc=...)`. Reading them needs the source, which an installed package has."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]  # the class statement `getsource` returned
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def keys_help(root: type) -> str:
    """Every dotted key under `root` with its type, default and docstring (`KEY: TYPE = DEFAULT`)."""
    lines = []
    for key in leaf_keys(root):
        *path, name = key.split(".")
        owner: type = functools.reduce(lambda c, p: type_hints(c)[p], path, root)
        default = _yaml_scalar(getattr(owner(), name))
        lines.append(f"  {key}: {type_name(type_hints(owner)[name])} = {default}\n      {field_docs(owner).get(name, '')}")
    return "\n".join(lines)


def _yaml_scalar(value: object) -> str:
    return yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True,
                          width=10_000).strip().removesuffix("\n...").removesuffix("...").strip()
