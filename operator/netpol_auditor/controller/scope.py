"""Which namespaces the operator audits: kopf namespace patterns (what the watches cover) and, optionally, a label
selector on the namespaces themselves (which of the watched namespaces' pods and policies enter the index).

Namespaces are always indexed, in scope or not: their labels decide the scope, and a namespace relabelled into
scope must be recognised as such.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# The very matcher kopf scopes its watches with, so the re-list covers exactly what the watches cover.
from kopf._cogs.structs.references import NamespaceName, match_namespace

from netpol_auditor.selectors import SelectorMatcher, compile_selector, parse_label_selector

__all__ = ["NamespaceScope", "namespace_in_scope"]


def namespace_in_scope(patterns: Sequence[str], namespace: str | None) -> bool:
    """Whether kopf serves *namespace* under the ``--namespace`` *patterns* (empty: cluster-wide)."""
    if namespace is None or not patterns:
        return True
    return any(match_namespace(NamespaceName(namespace), pattern) for pattern in patterns)


class NamespaceScope:
    """``--namespace`` patterns and the ``--namespace-selector`` label selector, together."""

    def __init__(self, patterns: Sequence[str] = (), selector: str = "") -> None:
        self.patterns = tuple(patterns)
        self.selector = selector.strip()
        self._matcher: SelectorMatcher | None = (
            compile_selector(parse_label_selector(self.selector)) if self.selector else None)

    @property
    def by_labels(self) -> bool:
        """Whether namespace labels decide (else the name patterns alone do)."""
        return self._matcher is not None

    @property
    def restricted(self) -> bool:
        """Whether anything narrows the scope below the whole cluster."""
        return bool(self.patterns) or self._matcher is not None

    def watches(self, namespace: str | None) -> bool:
        """Whether the watches (and re-lists) cover *namespace*: the name patterns alone."""
        return namespace_in_scope(self.patterns, namespace)

    def admits(self, namespace: str, labels: Mapping[str, str] | None) -> bool:
        """Whether the pods and policies of *namespace* belong in the index. *labels* None: the Namespace object
        is not known (yet), so a label selector cannot admit it."""
        if not self.watches(namespace):
            return False
        if self._matcher is None:
            return True
        return labels is not None and self._matcher.matches(labels)
