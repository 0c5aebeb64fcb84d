"""opslab: self-service Puppet infrastructure run like an open source project.

The package is deliberately empty at import time: each component (``opslab.enc``
and those that follow) imports only what it needs, so that short-lived
commands such as ``opslab-enc`` start fast.
"""

__version__ = "0.1.0"
