"""localcluster: a real Kubernetes control plane with Linux network namespaces as nodes, for tests and demos."""
