"""netpol-auditor: know, not hope, that Kubernetes NetworkPolicies are enforced."""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    """``__version__``, read from the installed package's metadata when first asked for (importing
    ``importlib.metadata`` costs every command a few tens of milliseconds)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("netpol-auditor")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0+unknown"
