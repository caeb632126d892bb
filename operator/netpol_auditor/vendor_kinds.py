"""The CNI-specific ("vendor") policy kinds, by API group and kind: what the manifest reader needs to recognise one
(reading it is `netpol_auditor.vendor_policy`, imported only when one is present)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VENDOR_KINDS", "VendorKind", "vendor_kind"]


@dataclass(frozen=True)
class VendorKind:
    """One vendor policy kind: its API group, kind, the versions it is served in, and whether it is namespaced."""

    group: str
    kind: str
    versions: tuple[str, ...]
    namespaced: bool
    vendor: str

    @property
    def label(self) -> str:
        """``group/Kind``: unique (Calico's NetworkPolicy shares its kind with Kubernetes')."""
        return f"{self.group}/{self.kind}"


VENDOR_KINDS: tuple[VendorKind, ...] = (
    # docs.cilium.io "Policy Language" / "CiliumClusterwideNetworkPolicy"
    VendorKind("cilium.io", "CiliumNetworkPolicy", ("v2",), True, "cilium"),
    VendorKind("cilium.io", "CiliumClusterwideNetworkPolicy", ("v2",), False, "cilium"),
    # docs.tigera.io calico reference/resources networkpolicy, globalnetworkpolicy; the API server's group
    # (projectcalico.org/v3) and the CRDs it stores them in (crd.projectcalico.org/v1), same spec.
    VendorKind("projectcalico.org", "NetworkPolicy", ("v3",), True, "calico"),
    VendorKind("projectcalico.org", "GlobalNetworkPolicy", ("v3",), False, "calico"),
    VendorKind("crd.projectcalico.org", "NetworkPolicy", ("v1",), True, "calico"),
    VendorKind("crd.projectcalico.org", "GlobalNetworkPolicy", ("v1",), False, "calico"),
    # antrea.io docs/antrea-network-policy.md: v1beta1 since Antrea 1.13, v1alpha1 before.
    VendorKind("crd.antrea.io", "NetworkPolicy", ("v1beta1", "v1alpha1"), True, "antrea"),
    VendorKind("crd.antrea.io", "ClusterNetworkPolicy", ("v1beta1", "v1alpha1"), False, "antrea"),
)

_BY_GROUP_KIND = {(k.group, k.kind): k for k in VENDOR_KINDS}


def vendor_kind(api_version: str, kind: str) -> VendorKind | None:
    """The vendor kind of an object of this apiVersion and kind, if it is one (any version of the group)."""
    group = api_version.rpartition("/")[0]
    return _BY_GROUP_KIND.get((group, kind))
