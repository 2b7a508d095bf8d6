"""The error a user's configuration raises; its message names field, value, rule and fix."""

import re


class ConfigError(ValueError):
    """A configuration that cannot run, found before any process group or GPU is touched."""


class LayoutError(ConfigError):
    """A parallel layout that the world size, the model or the batch shape does not allow."""


def error_message(exc: BaseException) -> str:
    """``exc``'s own message, also where a DataLoader worker raised it: torch re-raises a
    worker's exception as the same type with the worker's whole traceback for its message,
    ending in ``<module>.<Type>: <message>``; this gives back that message alone."""
    text = str(exc)
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return text
    name = re.escape(type(exc).__name__)
    tails = list(re.finditer(rf"^(?:[\w.]+\.)?{name}: ", text, re.MULTILINE))
    return text[tails[-1].end() :].strip() if tails else text
