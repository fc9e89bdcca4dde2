"""The runtimes a model server can run, one module per family (design §5)."""
