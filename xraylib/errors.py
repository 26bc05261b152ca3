"""The one exception type for bad user input."""


class InputError(ValueError):
    """Bad input from the user: a one-line message naming the file, column, option or value at fault."""
