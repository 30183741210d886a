"""Exception types with messages meant for users."""


class MedSecError(Exception):
    """Base class for errors caused by user input (files, configs, data)."""


class ConfigError(MedSecError, ValueError):
    """A configuration file or override is invalid; the message names the field."""


class DataError(MedSecError, ValueError):
    """A dataset file is missing, corrupt or has unexpected content; the message names it."""


class ValidationFailed(MedSecError):
    """A hard data expectation failed; the pipeline must stop."""
