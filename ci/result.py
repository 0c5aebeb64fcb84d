"""What a CI run found, as the reporter needs it for the vote and its message.

A run's result is per host: the resources Puppet failed to apply (with Puppet's message),
the resources the second apply of the change changed again (the change is not
idempotent), the smoke checks that failed (with their output); and, for the whole change,
the secrets the scan found, by file and line only: a :class:`SecretFound` has no field
that could hold the secret itself. An :class:`InfrastructureFailure` is the other end of
a run: the harness could not test the change (the cloud refused, Jenkins or the API
unreachable, a timeout), which is never a verdict on the change.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class FailedResource:
    """A resource Puppet failed to apply: ``File[/etc/motd]`` and Puppet's message."""

    resource: str
    message: str


@dataclass(frozen=True)
class FailedCheck:
    """A smoke check that failed, and what it printed or found."""

    name: str
    output: str


@dataclass(frozen=True)
class HostResult:
    """One cloned host's results."""

    host: str
    failed_resources: tuple[FailedResource, ...] = ()
    # Resources the second apply of the change changed again.
    changed_again: tuple[str, ...] = ()
    failed_checks: tuple[FailedCheck, ...] = ()

    @property
    def passed(self) -> bool:
        return not (self.failed_resources or self.changed_again or self.failed_checks)


@dataclass(frozen=True)
class SecretFound:
    """A secret the change adds: where, and of which kind (``Private Key``), never what."""

    file: str
    line: int
    kind: str


@dataclass(frozen=True)
class RunResult:
    """A finished run: every tested host, the secrets found, and where the run is shown."""

    hosts: tuple[HostResult, ...]
    secrets: tuple[SecretFound, ...] = ()
    run_url: str | None = None
    # Hosts the change affects that were not cloned (past the configured maximum).
    left_out: tuple[str, ...] = ()
    # Why the secret scan could not read the change (too large, unreadable): a change
    # that cannot be scanned does not pass.
    unscanned: str | None = None

    @property
    def passed(self) -> bool:
        return not self.secrets and not self.unscanned and all(
            host.passed for host in self.hosts)


@dataclass(frozen=True)
class InfrastructureFailure:
    """The run could not test the change: ``what`` failed (one line), and details."""

    what: str
    detail: str = ""
    run_url: str | None = None
