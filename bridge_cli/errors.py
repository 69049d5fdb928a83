"""The one error family of bridge.

BridgeError
 ├── ConfigError        a config file is unreadable, malformed or invalid
 ├── UsageError         bad input on the command line or through the control API
 ├── StartupError       a listener could not bind, the state directory is unusable
 ├── ControlError       the control API could not be reached or refused a call
 │    └── NotRunningError   no bridge is running (no control.json, or nobody listening)
 └── StoreError         the store is broken or busy (callers treat it as a miss)

Only cli/ turns these into a message and an exit status; engine code never exits.
"""

from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit statuses shared by every command."""

    OK = 0
    FINDINGS = 1  # drift found, or a `bridge diff --fail-on` class matched
    ERROR = 2  # usage or input error, nothing running, a port that would not bind


class BridgeError(Exception):
    """Base of every error bridge raises on purpose; its str() is a one-line message."""

    exit_status: ExitStatus = ExitStatus.ERROR


class ConfigError(BridgeError):
    """A config file is unreadable, malformed YAML, or fails the schema."""


class UsageError(BridgeError):
    """Bad input on the command line or through the control API."""


class StartupError(BridgeError):
    """bridge could not start: a port would not bind, the state directory is unusable."""


class ControlError(BridgeError):
    """The control API refused a call or answered something unexpected."""


class NotRunningError(ControlError):
    """No bridge is running where control.json says."""


class StoreError(BridgeError):
    """The store is broken or busy; callers treat it as a miss, never a crash."""
