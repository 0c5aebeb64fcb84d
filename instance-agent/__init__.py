"""The instance agent: keeps this instance on its project's branch, reports, lets members in.

``opslab agent run`` checks the API cheaply for a new target (commit,
classification, who gets sudo), applies with the branch runner when it
changed or when the drift interval is due, and reports every run, spooling
reports while the API is away. ``opslab-ssh-keys`` serves SSH keys from the
directory to sshd.
"""
