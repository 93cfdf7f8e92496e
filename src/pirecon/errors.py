"""Errors pirecon raises for bad input from its users.

Every one is a :class:`PireconUserError`, itself a ``ValueError``, and its
message names what was expected, what was found and where (the file, the
config key or the command-line option). The ``pirecon`` command prints these
as one line, ``pirecon <command>: error: <message>``, and exits with status 2;
any other exception is a bug and keeps its traceback.

- :class:`pirecon.data.validate.SpecError`: a file that does not follow its
  spec in ``data_specs/`` (defined with the file checks);
- :class:`ConfigError`: a configuration (YAML) that cannot be used: a missing
  or malformed file, an unknown model, data files that do not exist;
- :class:`ArgumentError`: command-line arguments that cannot be used.
"""

from __future__ import annotations

__all__ = ["PireconUserError", "ConfigError", "ArgumentError", "PATH_ERRORS"]

#: OS errors about a path the user named (missing, not permitted, a directory where a file is expected
#: or the reverse, already there): the command line reports them as one line too. Other OS errors
#: (an I/O error, a full disk) keep their traceback.
PATH_ERRORS: tuple[type[OSError], ...] = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                                          NotADirectoryError)


class PireconUserError(ValueError):
    """Bad input from the user: the message names what was expected, what was found and where."""


class ConfigError(PireconUserError):
    """A configuration that cannot be used; the message names the file and the key."""


class ArgumentError(PireconUserError):
    """A command-line argument that cannot be used; the message names the option."""
