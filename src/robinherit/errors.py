"""Errors a user can act on. The CLI prints their message as one paragraph and exits with code 2."""


class RobinheritError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(RobinheritError):
    pass


class NonFiniteLossError(RobinheritError):
    pass


class StoreError(RobinheritError):
    pass


class DataError(RobinheritError):
    pass


class OutputError(RobinheritError):
    pass
