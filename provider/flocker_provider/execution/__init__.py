"""Execution: runs a plan's changes through the Docker layer, a move's with its context and transfer channel."""
