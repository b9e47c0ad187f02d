"""Errors meant for people: each says what was wrong, where, and what to do. The CLI maps them to exit codes."""


class MedkitError(Exception):
    """Base of medkit's own errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(MedkitError):
    """The command line, a config file or an input path is wrong (exit code 2)."""

    exit_code = 2


class RunError(MedkitError):
    """A run started and then failed (exit code 1)."""

    exit_code = 1


class PluginError(MedkitError):
    """A plugin could not be loaded or registered; raised only in strict mode or when the plugin is used."""

    exit_code = 1
