"""The one exception every bag command reports as ``error: ...`` with exit status 2."""


class BagError(Exception):
    """A bag, topic, file or option that stops a command before or while it runs; the text says why."""
