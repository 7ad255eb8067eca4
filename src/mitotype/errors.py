"""The one exception type users see: a message that names the file and the problem."""


class MitotypeError(Exception):
    """A user-facing error (bad input, missing file, wrong model). The CLI prints it without a traceback."""
