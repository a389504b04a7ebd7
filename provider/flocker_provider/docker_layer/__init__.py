"""The Docker layer: the only place that imports docker-py, behind the ``Engine`` protocol."""
