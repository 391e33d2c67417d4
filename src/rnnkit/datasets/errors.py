"""Errors raised by `rnnkit.datasets`; every message is one line that names the file or argument."""


class DatasetError(ValueError):
    """A data file is corrupt or inconsistent, or a data-set argument is invalid."""


class DataNotFoundError(DatasetError, FileNotFoundError):
    """The data set's files are in none of the places searched (and were not downloaded)."""


class DownloadError(DatasetError):
    """A file could not be fetched, with a matching checksum, from any of its mirrors."""
