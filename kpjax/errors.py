"""User-facing errors: the CLI prints them as one line and exits with status 2."""


class KpjaxError(Exception):
    """A mistake in the user's input (file, row, argument), not a bug."""
