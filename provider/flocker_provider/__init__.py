"""The engine behind flocker-pulumi, a folder per layer: the Pulumi-facing hooks here,
``planning`` (values and the pure planner), ``execution`` (plans run), ``docker_layer`` (the
only place that imports docker-py) and ``on_node`` (programs that run on the nodes)."""
