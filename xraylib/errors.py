"""The one exception type for bad user input, the up-front refusal of sizes that cannot fit in memory, and the
one-line form of another library's exception."""


class InputError(ValueError):
    """Bad input from the user: a one-line message naming the file, column, option or value at fault."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, shortened (its type's name when the message is empty)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_memory(need: int, what: str, fix: str) -> None:
    """Refuse up front (one-line InputError) work whose arrays need more than half of this machine's memory."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: no check
        return
    if need > 0.5 * total:
        raise InputError(
            f"{what} needs {need / 1e9:,.1f} GB of memory, more than half of this machine's "
            f"{total / 1e9:,.1f} GB: {fix}"
        )
