"""Errors meant for people: their message is the whole story, no traceback needed."""


class ProviderError(Exception):
    """A failure the user can act on; the provider host prints only its message."""
