"""The error a beton write ends with when one of FFCV's writer workers fails. Its own module because both the
writer that raises it (data/beton_writer.py) and the entry point that callers import it from (data/betons.py)
need it, and betons.py imports the writer: kept in either of them, the two modules would import each other."""


class WriterFailed(RuntimeError):
    """A beton writer's worker failed; the message names its error and the file it was on."""
