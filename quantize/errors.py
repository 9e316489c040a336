"""A toolchain step that ran and failed on its own terms (calibration, detection): the CLI says
so in one line and exits 1; bad input is ``quantize.data.DataError`` / ``ValueError`` (exit 2)."""


class StepError(RuntimeError):
    """The step's result failed its own check; the message says what to look at."""
