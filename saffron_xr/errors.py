"""Exceptions raised by saffron_xr."""

from __future__ import annotations


class SpiceFileError(ValueError):
    """A file is not a usable SPICE Level-2 file.

    The message always starts with the file name, then says what is wrong.

    Parameters
    ----------
    path : str or path-like
        The offending file.
    problem : str
        What is wrong with it.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
