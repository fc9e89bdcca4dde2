"""Where a meeting's SFU runs: local processes (``konfer up``) or Kubernetes objects."""
