"""Smoke tests: every Puppet class says how to check that it works.

A module of the control repository declares checks for its classes in
``modules/MODULE/checks.yaml`` (:mod:`.spec` reads and validates them); each
check is of one kind (:mod:`.kinds`, one tiny module per kind of resource:
a port, an HTTP answer, a service, a process, a file, a command, a package,
a user, a group). :mod:`.host` finds what this host applied (its classes and
their parameters from Puppet's catalog, its variables, its facts, the tree
of the commit), :mod:`.values` fills the checks' ``${...}`` references from
them, :mod:`.runner` runs the checks side by side with deadlines, and
:mod:`.results` turns the results into a summary, JSON, JUnit XML and the
compact document the agent reports. ``opslab smoke`` is :mod:`.cli`.
"""
