"""The one exception tree. Every error says what is wrong and what to do about it."""


class EdgeFerError(Exception):
    """Base of every error edge-fer raises on purpose."""


class ConfigError(EdgeFerError):
    """The configuration is invalid. Carries one message per problem."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ModelError(EdgeFerError):
    """A model file or its card is missing, corrupt or of the wrong shape."""


class SourceError(EdgeFerError):
    """A frame source cannot be opened or is of an unsupported kind."""


class SourceUnavailable(SourceError):
    """A camera or stream that is not there now but may come (a USB camera still enumerating at
    boot, an IP camera rebooting): worth waiting for, unlike a malformed source or a missing file."""


class PublishError(EdgeFerError):
    """The sink cannot be set up (bad TLS files, unreachable broker at a strict start)."""
