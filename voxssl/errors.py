"""Exceptions that the CLI turns into one clear message and a non-zero exit (no traceback).

Library code raises these for problems the *user* can fix (a bad recipe key, a corrupt file, a
missing folder). Programming errors stay ordinary exceptions so that they keep their traceback.
"""


class VoxsslError(Exception):
    """A user-facing error. The message must name the file or field at fault."""


class ConfigError(VoxsslError):
    """A recipe or override is invalid (unknown key, wrong type, missing path)."""


class DataError(VoxsslError):
    """An input file or folder cannot be used (unreadable, wrong shape, mismatched grids...)."""


class CheckpointError(VoxsslError):
    """Weights do not match the model or plan they are loaded into."""
