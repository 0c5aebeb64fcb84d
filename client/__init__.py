"""The command-line client for members: ``opslab projects``, ``hosts``, ``log``,
``changes``, ``runs`` and ``keys``, each a component of ``opslab`` (opslab/cli.py),
all on the one API client (:class:`opslab.apiclient.Client`, as a person: HTTP Basic).

    opslab projects list | show P | create P | members add|remove P UID | branch P B
    opslab hosts list | show FQDN | create P NAME | set FQDN | delete FQDN
    opslab log [PROJECT [MESSAGE...]]
    opslab changes [ID] [--project P] [--actor U] [--action A] [--target T] [--limit N]
    opslab runs [ID] [--change N] [--state S] [--project P] [--limit N]
    opslab keys add FILE | list [UID] | remove FINGERPRINT

Who is asking and where the API is: :mod:`.credentials` (the environment or a
file readable by its owner alone, never the command line). What is shown: a
table or ``key: value`` lines for people, ``--json`` (the API's own document)
for scripts (:mod:`.output`). Exit statuses (:mod:`.session`):

    0  done
    1  the API refused (a 4xx), its reason printed as ``opslab: HTTP 403: ...``
    2  bad usage, or no usable credentials
    3  the API is unavailable: no complete answer within the timeout, a 5xx, a 429,
       a redirect, or an answer that is not the API's JSON
       (not JSON, or JSON of another shape)

Only the base install is needed: the standard library, PyYAML and opslab's core.
"""
