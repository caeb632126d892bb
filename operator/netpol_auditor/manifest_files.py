"""Read manifests for the offline commands: files, directories, stdin; YAML or JSON; ``kind: List`` dumps."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from .manifests import KubeObject, ManifestError, parse_object

__all__ = ["iter_objects", "load_paths", "load_text"]

_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def iter_objects(doc: Any, source: str = "<input>") -> Iterator[KubeObject]:
    """Objects in one decoded document: a single object or a ``kind: List`` / ``*List`` (kubectl get -o yaml)."""
    if doc is None:
        return
    if not isinstance(doc, Mapping):
        raise ManifestError(source, "", "", f"expected a Kubernetes object, got {type(doc).__name__}")
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise ManifestError(source, str(kind), "items", "must be a list")
        for item in items:
            yield from iter_objects(item, source)
        return
    parsed = parse_object(doc, source)
    if parsed is not None:
        yield parsed


def load_text(text: str, source: str = "<input>") -> list[KubeObject]:
    """Parse multi-document YAML (or JSON, a YAML subset) text."""
    docs: list[Any] | None = None
    if text.lstrip().startswith(("{", "[")):
        # Fast path for JSON (kubectl get -o json): a JSON parser is an order of magnitude faster than YAML's.
        try:
            loaded = json.loads(text)
        except ValueError:
            docs = None  # not one JSON document: let the YAML parser (and its error messages) handle it
        else:
            docs = loaded if isinstance(loaded, list) else [loaded]
    if docs is None:
        docs = _load_yaml(text, source)
    out: list[KubeObject] = []
    for doc in docs:
        out.extend(iter_objects(doc, source))
    return out


def _load_yaml(text: str, source: str) -> list[Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return list(yaml.load_all(text, Loader=loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(source, "", where, f"invalid YAML/JSON: {problem}") from None


def _files(path: str) -> list[str]:
    if os.path.isdir(path):
        found: list[str] = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            found.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(_MANIFEST_SUFFIXES))
        return found
    return [path]


def load_paths(paths: Sequence[str]) -> list[KubeObject]:
    """Load files, directories (recursively: *.yaml, *.yml, *.json) and ``-`` (stdin), in order."""
    out: list[KubeObject] = []
    for path in paths:
        if path == "-":
            out.extend(load_text(sys.stdin.read(), "<stdin>"))
            continue
        if not os.path.exists(path):
            raise ManifestError(path, "", "", "no such file or directory")
        for file in _files(path):
            try:
                with open(file, encoding="utf-8") as fh:
                    text = fh.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise ManifestError(file, "", "", f"cannot read: {exc}") from None
            out.extend(load_text(text, file))
    return out
