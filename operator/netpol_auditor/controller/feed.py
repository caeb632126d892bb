"""The index feed: applies watch events and full listings of API objects to the reachability index.

Watch events arrive per object, possibly out of order across objects (kopf runs one worker per object UID, so a
deleted and re-created object of the same name is two workers), and a re-list after a watch expiry (410 Gone) or
an outage never delivers DELETED for objects that vanished meanwhile. The feed therefore

* remembers, per object key, the UID and resourceVersion it applied and a sequence number of when;
* ignores a DELETED for a UID other than the one it holds, and any event for a UID it saw deleted;
* reconciles a full listing against what it holds: an object missing from the listing is deleted, a listed object
  it lacks or holds at another version is upserted, unless a watch event for that key arrived after the listing
  started (the watch is newer than the listing).

It never writes to the API: it only reads dicts handed to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netpol_auditor.cluster_policy import ClusterPolicyKind
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import ManifestError, parse_object
from netpol_auditor.model import ObjectKind

__all__ = ["ADDED", "DELETED", "FEED_KINDS", "MODIFIED", "ApplyObserver", "FeedKind", "IndexFeed", "ObjectKey",
           "ReconcileResult", "Reconciliation"]

logger = logging.getLogger(__name__)

ADDED = "added"
MODIFIED = "modified"
DELETED = "deleted"

#: What the feed holds: the namespaced kinds and Namespaces, and the cluster-scoped policies of
#: policy.networking.k8s.io (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy).
FeedKind = ObjectKind | ClusterPolicyKind
FEED_KINDS: tuple[FeedKind, ...] = (*ObjectKind, *ClusterPolicyKind)

#: (kind, namespace or None for cluster-scoped, name)
ObjectKey = tuple[FeedKind, str | None, str]

#: Called after every applied change: (kind, change type, seconds the index took).
ApplyObserver = Callable[[FeedKind, str, float], None]

_KIND_NAMES: dict[FeedKind, str] = {ObjectKind.POD: "Pod", ObjectKind.NAMESPACE: "Namespace",
                                    ObjectKind.NETWORK_POLICY: "NetworkPolicy",
                                    **{kind: kind.value for kind in ClusterPolicyKind}}
_TOMBSTONE_LIMIT = 100_000


@dataclass
class _Record:
    uid: str
    resource_version: str
    seq: int
    valid: bool  # False: the object could not be parsed and is not in the index


@dataclass(frozen=True)
class ReconcileResult:
    added: int = 0
    modified: int = 0
    deleted: int = 0

    @property
    def changes(self) -> int:
        return self.added + self.modified + self.deleted


class IndexFeed:
    """Owns one ReachabilityIndex and everything needed to keep it equal to the cluster's state."""

    def __init__(self, index: ReachabilityIndex | None = None, observer: ApplyObserver | None = None) -> None:
        self.index = index if index is not None else ReachabilityIndex.from_objects(())
        self._observer = observer
        self._records: dict[ObjectKey, _Record] = {}
        self._tombstones: dict[str, int] = {}  # deleted UID -> seq of the deletion
        self._seq = 0
        self._counts: dict[FeedKind, int] = dict.fromkeys(FEED_KINDS, 0)
        self._skipped: dict[FeedKind, int] = dict.fromkeys(FEED_KINDS, 0)
        self.skipped_objects = 0  # every rejection since start (an object rejected twice counts twice)

    # -- bookkeeping ---------------------------------------------------------------------------------------------

    @property
    def sequence(self) -> int:
        """Monotonic count of events seen; a reconcile takes it when its listing starts."""
        return self._seq

    def keys(self, kind: FeedKind | None = None) -> set[ObjectKey]:
        return {k for k in self._records if kind is None or k[0] is kind}

    def counts(self) -> dict[FeedKind, int]:
        """Objects of each kind in the index (O(1): kept up to date on every change)."""
        return dict(self._counts)

    def skipped(self) -> dict[FeedKind, int]:
        """Watched objects of each kind held as rejected now (malformed, so missing from every verdict)."""
        return dict(self._skipped)

    def uid_of(self, kind: FeedKind, namespace: str | None, name: str) -> str | None:
        record = self._records.get((kind, namespace, name))
        return record.uid if record is not None else None

    def clear(self) -> None:
        """Forget everything (used when the replica stops being the active one)."""
        for (kind, namespace, name), record in list(self._records.items()):
            if record.valid:
                self._delete_from_index(kind, namespace, name, observe=False)
        self._records.clear()
        self._skipped = dict.fromkeys(FEED_KINDS, 0)
        self._tombstones.clear()

    # -- watch events --------------------------------------------------------------------------------------------

    def apply_event(self, kind: FeedKind, event_type: str | None, body: Mapping[str, Any]) -> str | None:
        """Apply one watch event (type ADDED/MODIFIED/DELETED, or None for a listed object).

        Returns the change made to the index (``added``/``modified``/``deleted``) or None when nothing changed.
        """
        self._seq += 1
        key, uid, version = _identity(kind, body)
        if event_type == "DELETED":
            self._tombstone(uid)
            record = self._records.get(key)
            if record is None or (uid and record.uid and record.uid != uid):
                return None  # not held, or a newer object of the same name is held
            self._drop_record(key)
            if record.valid:
                self._delete_from_index(kind, key[1], key[2])
                return DELETED
            return None
        if uid and uid in self._tombstones:
            return None  # a late event of an object already deleted
        return self._upsert(key, uid, version, body)

    def evict(self, kind: FeedKind, namespace: str | None, name: str) -> str | None:
        """Forget an object that still exists but left the audited scope (its namespace was relabelled out):
        unlike a deletion, no tombstone, so it is taken again if the namespace comes back into scope."""
        key = (kind, namespace, name)
        if key not in self._records:
            return None
        record = self._drop_record(key)
        if record.valid:
            self._delete_from_index(kind, namespace, name)
            return DELETED
        return None

    def evict_namespace(self, namespace: str) -> int:
        """Evict every pod and policy of *namespace* (the Namespace object itself stays); returns how many left
        the index."""
        keys = [k for k in self._records if k[1] == namespace and k[0] is not ObjectKind.NAMESPACE]
        return sum(1 for kind, ns, name in keys if self.evict(kind, ns, name) == DELETED)

    # -- full listings -------------------------------------------------------------------------------------------

    def reconcile(self, kind: FeedKind, listed: Iterable[Mapping[str, Any]], started_seq: int,
                  in_scope: Callable[[str | None], bool] | None = None) -> ReconcileResult:
        """Make the index hold exactly *listed* for *kind*, except keys the watch touched after *started_seq*.

        *in_scope* restricts the deletion of held-but-unlisted objects to namespaces the listing covered.
        """
        reconciliation = self.start_reconcile(kind, started_seq, in_scope)
        reconciliation.add(listed)
        return reconciliation.finish()

    def start_reconcile(self, kind: FeedKind, started_seq: int,
                        in_scope: Callable[[str | None], bool] | None = None) -> Reconciliation:
        """A reconcile fed page by page (a 10k-pod listing need never be in memory at once)."""
        return Reconciliation(self, kind, started_seq, in_scope)

    # -- internals -----------------------------------------------------------------------------------------------

    def _upsert(self, key: ObjectKey, uid: str, version: str, body: Mapping[str, Any]) -> str | None:
        kind = key[0]
        record = self._records.get(key)
        if record is not None and record.uid == uid and record.resource_version == version and version:
            record.seq = self._seq
            return None  # already applied (e.g. the same object in a re-list)
        try:
            obj = parse_object(_with_kind(kind, body), source="api")
            if obj is None:
                raise ManifestError("api", f"{_KIND_NAMES[kind]} {_display(key)}", "kind", "not indexable")
        except (ManifestError, ValueError, TypeError, KeyError, AttributeError) as exc:
            self.skipped_objects += 1
            logger.warning("skipping %s %s: %s", _KIND_NAMES[kind], _display(key), exc,
                           extra={"object_kind": _KIND_NAMES[kind], "object": _display(key)})
            self._put_record(key, _Record(uid, version, self._seq, valid=False))
            if record is not None and record.valid:
                self._delete_from_index(kind, key[1], key[2])
                return DELETED
            return None
        started = time.perf_counter()
        try:
            self.index.upsert(obj)
        except Exception:
            self.skipped_objects += 1
            logger.exception("the index rejected %s %s; skipping it", _KIND_NAMES[kind], _display(key))
            self._put_record(key, _Record(uid, version, self._seq, valid=False))
            if record is not None and record.valid:
                self._delete_from_index(kind, key[1], key[2])
                return DELETED
            return None
        change = MODIFIED if record is not None and record.valid else ADDED
        if change == ADDED:
            self._counts[kind] += 1
        self._put_record(key, _Record(uid, version, self._seq, valid=True))
        if self._observer is not None:
            self._observer(kind, change, time.perf_counter() - started)
        return change

    def _put_record(self, key: ObjectKey, record: _Record) -> None:
        old = self._records.get(key)
        if old is not None and not old.valid:
            self._skipped[key[0]] -= 1
        if not record.valid:
            self._skipped[key[0]] += 1
        self._records[key] = record

    def _drop_record(self, key: ObjectKey) -> _Record:
        record = self._records.pop(key)
        if not record.valid:
            self._skipped[key[0]] -= 1
        return record

    def _delete_from_index(self, kind: FeedKind, namespace: str | None, name: str, observe: bool = True) -> None:
        started = time.perf_counter()
        self.index.delete(kind, namespace, name)
        self._counts[kind] -= 1
        if observe and self._observer is not None:
            self._observer(kind, DELETED, time.perf_counter() - started)

    def _tombstone(self, uid: str) -> None:
        if not uid:
            return
        self._tombstones[uid] = self._seq
        if len(self._tombstones) > _TOMBSTONE_LIMIT:
            # Drop the oldest half; a UID is never reused, so old tombstones only guard against very late events.
            cutoff = sorted(self._tombstones.values())[len(self._tombstones) // 2]
            self._tombstones = {u: s for u, s in self._tombstones.items() if s > cutoff}


class Reconciliation:
    """One reconcile of a kind with a listing, fed with `add` page by page and closed with `finish`."""

    def __init__(self, feed: IndexFeed, kind: FeedKind, started_seq: int,
                 in_scope: Callable[[str | None], bool] | None) -> None:
        self._feed = feed
        self._kind = kind
        self._started_seq = started_seq
        self._in_scope = in_scope
        self._seen: set[ObjectKey] = set()
        self._added = self._modified = 0

    def add(self, listed: Iterable[Mapping[str, Any]]) -> None:
        feed, started_seq = self._feed, self._started_seq
        for body in listed:
            key, uid, version = _identity(self._kind, body)
            self._seen.add(key)
            record = feed._records.get(key)
            if record is not None and record.seq > started_seq:
                continue  # the watch delivered something newer than this listing
            if record is not None and record.uid == uid and record.resource_version == version:
                continue
            if uid and feed._tombstones.get(uid, -1) > started_seq:
                continue  # deleted after the listing started
            feed._seq += 1
            change = feed._upsert(key, uid, version, body)
            if change == ADDED:
                self._added += 1
            elif change == MODIFIED:
                self._modified += 1

    def finish(self) -> ReconcileResult:
        """Delete what the listing did not have (and the watch did not touch since); returns the changes."""
        feed, kind, deleted = self._feed, self._kind, 0
        for key in [k for k in feed._records if k[0] is kind and k not in self._seen]:
            record = feed._records[key]
            if record.seq > self._started_seq or (self._in_scope is not None and not self._in_scope(key[1])):
                continue
            feed._drop_record(key)
            feed._tombstone(record.uid)
            if record.valid:
                feed._delete_from_index(kind, key[1], key[2])
                deleted += 1
        return ReconcileResult(self._added, self._modified, deleted)


def _identity(kind: FeedKind, body: Mapping[str, Any]) -> tuple[ObjectKey, str, str]:
    meta = body.get("metadata") or {}
    cluster_scoped = kind is ObjectKind.NAMESPACE or isinstance(kind, ClusterPolicyKind)
    namespace = None if cluster_scoped else (meta.get("namespace") or "default")
    return (kind, namespace, str(meta.get("name", ""))), str(meta.get("uid") or ""), str(
        meta.get("resourceVersion") or "")


def _with_kind(kind: FeedKind, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """Objects from a typed LIST carry no kind/apiVersion per item; add them for the parser."""
    if body.get("kind"):
        return body
    if isinstance(kind, ClusterPolicyKind):
        api_version = kind.api_version
    else:
        api_version = "networking.k8s.io/v1" if kind is ObjectKind.NETWORK_POLICY else "v1"
    return {**body, "kind": _KIND_NAMES[kind], "apiVersion": api_version}


def _display(key: ObjectKey) -> str:
    return f"{key[1]}/{key[2]}" if key[1] is not None else key[2]
