"""The YAML loader of every file the offline commands read (manifests, expectations).

Safe YAML, with two differences. A key given twice in one mapping is an error, as in the API server's strict
decoding: otherwise the last one silently wins. Unknown tags (``!Ref``, ``!!python/name:``) load as plain values:
they only occur in documents that are not Kubernetes objects, which are skipped with a warning rather than ending
the run.
"""

from __future__ import annotations

from typing import Any

import yaml

try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

__all__ = ["StrictLoader"]


class StrictLoader(_SafeLoader):
    """Safe YAML; a key given twice in one mapping is an error; unknown tags load as plain values."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            # Merge keys (`<<: *defaults`) may be overridden on purpose; only keys written out are compared.
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f'duplicate key "{key_node.value}"', key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _untagged(loader: StrictLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


StrictLoader.add_constructor(None, _untagged)
