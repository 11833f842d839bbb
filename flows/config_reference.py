"""The configuration reference, generated from the typed configs: ``autoscalp config reference``
writes conf/REFERENCE.md, ``autoscalp config show`` prints the effective configuration.

The reference walks ``ProductConfig`` and its nested pydantic models: one section per top-level
key (the model's docstring, then a table of dotted key paths with type, constraints, default and
the field's description, else the comment on its line in conf/base.yaml, which spells out every
default). Models reached through a list, a map or a union (margin tiers, tuning
ranges, latency models) are tabled once under "Types". Generated, never edited by hand: a test
fails when conf/REFERENCE.md is behind the models.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
import yaml
from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from flows._cli_common import ConfigOption, JsonOption, _config, stdout
from flows.config import ProductConfig

REFERENCE_PATH = Path(__file__).resolve().parents[1] / "conf" / "REFERENCE.md"
BASE_YAML = REFERENCE_PATH.with_name("base.yaml")
LONG_DEFAULT = 60  # characters: a longer default is summarised and left to conf/base.yaml
_BOUNDS = ((Gt, "gt", ">"), (Ge, "ge", ">="), (Lt, "lt", "<"), (Le, "le", "<="))

config_app = typer.Typer(help="The configuration: reference and effective values.", no_args_is_help=True)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_name(annotation: Any, found: dict[str, type[BaseModel]]) -> str:
    """A readable type; models met inside containers or unions are added to ``found``."""
    if annotation is type(None):
        return "null"
    if _is_model(annotation):
        found.setdefault(annotation.__name__, annotation)
        return annotation.__name__
    if annotation is datetime:
        return "datetime (ISO-8601)"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a, found) for a in args)
    if origin is tuple:
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else typing.Any
        return f"list[{type_name(inner, found)}]" if inner is not typing.Any else "list"
    if origin in (list, set, frozenset):
        return f"list[{type_name(args[0], found)}]" if args else "list"
    if origin is dict:
        return f"map[{type_name(args[0], found)}, {type_name(args[1], found)}]" if args else "map"
    return getattr(annotation, "__name__", str(annotation))


def constraints(metadata: list[Any]) -> str:
    parts = []
    for item in metadata:
        for kind, attr, symbol in _BOUNDS:
            if isinstance(item, kind):
                parts.append(f"{symbol} {getattr(item, attr):g}")
        if isinstance(item, MinLen):
            parts.append(f"length >= {item.min_length}")
        if isinstance(item, MaxLen):
            parts.append(f"length <= {item.max_length}")
    return ", ".join(parts)


def default_text(field: Any, value: Any) -> str:
    """The default as it would be written in YAML (JSON flow style), summarised when long."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    text = json.dumps(value, separators=(", ", ": "), default=str)
    if len(text) > LONG_DEFAULT and isinstance(value, (list, dict)):
        what = "items" if isinstance(value, list) else "keys"
        return f"({len(value)} {what}: see conf/base.yaml)"
    return f"`{text}`"


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.]*):(?P<rest>.*)$")


def yaml_comments(path: Path = BASE_YAML) -> dict[str, str]:
    """Dotted key path -> the comment on its line (``key: value  # comment``) in a block-style YAML
    file; lines of list items and comment-only lines are skipped."""
    if not path.is_file():
        return {}
    comments, stack = {}, []  # stack: (indent, key) of the enclosing mappings
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        _, hash_, comment = match["rest"].partition(" #")
        if hash_ and comment.strip():
            comments[".".join(k for _, k in stack)] = comment.strip()
    return comments


def _first_paragraph(doc: str | None) -> str:
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split()) if doc else ""


def rows(model: type[BaseModel], values: dict[str, Any] | None, prefix: str,
         found: dict[str, type[BaseModel]]) -> list[tuple[str, str, str, str]]:  # fmt: skip
    """(key path, type, default, description) of every leaf under ``model``; nested models are
    walked, their fields' paths dotted. ``values``: the defaults dumped in JSON mode (None for a
    model without defaults of its own, as in the Types section)."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if _is_model(annotation):
            out += rows(annotation, (values or {}).get(name) if values is not None else None, path + ".", found)
            continue
        kind = type_name(annotation, found)
        bounds = constraints(field.metadata)
        kind = f"{kind} ({bounds})" if bounds else kind
        value = values.get(name) if values is not None else _dump_default(field)
        out.append((path, kind, default_text(field, value), field.description or ""))
    return out


def _dump_default(field: Any) -> Any:
    if field.default is PydanticUndefined and field.default_factory is None:
        return None
    default = field.get_default(call_default_factory=True)
    return default.model_dump(mode="json") if isinstance(default, BaseModel) else json.loads(
        json.dumps(default, default=str))  # fmt: skip


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(entries: list[tuple[str, str, str, str]]) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for path, kind, default, description in entries:
        lines.append(f"| `{path}` | {_cell(kind)} | {_cell(default)} | {_cell(description)} |")
    return lines


def render_reference(model: type[BaseModel] = ProductConfig, base_yaml: Path | None = BASE_YAML) -> str:
    """The markdown reference of ``model`` (conf/REFERENCE.md is this for ``ProductConfig``); a
    field without a description is described by its line's comment in ``base_yaml``."""
    defaults = model().model_dump(mode="json")
    found: dict[str, type[BaseModel]] = {}
    comments = yaml_comments(base_yaml) if base_yaml is not None else {}
    lines = [
        "# Configuration reference",
        "",
        "Generated from the typed configs (`flows/config.py` `ProductConfig` and the models it nests) by",
        "`autoscalp config reference --output conf/REFERENCE.md`; do not edit by hand. Every key has an",
        "embedded default, so a YAML file names only what it changes (`extends: base.yaml` works). Exchange",
        "API keys are never read from YAML: set `AUTOSCALP_API_KEY` / `AUTOSCALP_API_SECRET` (or",
        "`AUTOSCALP_<EXCHANGE>_API_KEY` / `_API_SECRET`) in the environment. `autoscalp config show`",
        "prints the effective configuration of a file.",
        "",
    ]
    top = [(n, f) for n, f in model.model_fields.items() if not _is_model(f.annotation)]
    if top:
        entries = [r for n, _ in top for r in _leaf_rows(model, n, defaults, found)]
        lines += ["## top level", "", *_table(_with_comments(entries, comments)), ""]
    for name, field in model.model_fields.items():
        if not _is_model(field.annotation):
            continue
        lines += [f"## {name}", ""]
        doc = _first_paragraph(field.annotation.__doc__) or comments.get(name, "")
        if doc:
            lines += [doc, ""]
        lines += [*_table(_with_comments(rows(field.annotation, defaults[name], name + ".", found), comments)), ""]
    done: set[str] = set()
    if found:
        lines += ["## Types", "", "Models used inside lists, maps and unions above.", ""]
    while len(done) < len(found):  # a type's own fields may name more types
        name = sorted(set(found) - done)[0]
        done.add(name)
        type_model = found[name]
        lines += [f"### {name}", ""]
        doc = _first_paragraph(type_model.__doc__)
        if doc:
            lines += [doc, ""]
        lines += [*_table(rows(type_model, None, "", found)), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _with_comments(entries: list[tuple[str, str, str, str]], comments: dict[str, str]) -> list[tuple[str, str, str, str]]:
    return [(path, kind, default, description or comments.get(path, "")) for path, kind, default, description in entries]


def _leaf_rows(model: type[BaseModel], name: str, defaults: dict, found: dict) -> list[tuple[str, str, str, str]]:
    field = model.model_fields[name]
    kind = type_name(field.annotation, found)
    bounds = constraints(field.metadata)
    return [(name, f"{kind} ({bounds})" if bounds else kind, default_text(field, defaults[name]), field.description or "")]


@config_app.command("reference")
def reference_command(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file (default: stdout).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when conf/REFERENCE.md is not up to date.")] = False,
) -> None:
    """The configuration reference (markdown) generated from the typed configs."""
    text = render_reference()
    if check:
        current = REFERENCE_PATH.read_text(encoding="utf-8") if REFERENCE_PATH.is_file() else ""
        if current != text:
            print(f"{REFERENCE_PATH} is out of date: run `autoscalp config reference --output {REFERENCE_PATH}`")
            raise typer.Exit(1)
        print(f"{REFERENCE_PATH} is up to date")
        return
    if output is None:
        print(text, end="")
        return
    output.write_text(text, encoding="utf-8")
    stdout.print(f"wrote {output}")


@config_app.command("show")
def show_command(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The effective configuration: the file (and what it extends) over the embedded defaults."""
    values = _config(config).model_dump(mode="json")
    if as_json:
        print(json.dumps(values, indent=2))
    else:
        print(yaml.safe_dump(values, sort_keys=False, allow_unicode=True), end="")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
