"""netpol-auditor: know, not hope, that Kubernetes NetworkPolicies are enforced."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("netpol-auditor")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
