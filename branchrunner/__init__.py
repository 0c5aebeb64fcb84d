"""The branch runner: project branches as atomic Puppet environments, and masterless apply.

Layers, from the remote to a Puppet run (r10k's source, environment and
deployment, plus the apply):

* ``git``: the one bare mirror of the remote; every git call has a timeout;
* ``store``: file contents by git blob id, stored once and hard-linked;
* ``environments``: the environments directory: trees built aside, swapped
  in by a symlink flip, kept for a while, records of every sync;
* ``deployment``: ``opslab branch sync``: what to fetch, build, swap, purge;
* ``report`` and ``apply``: ``opslab branch apply`` and its structured result;
* ``cli``: the ``opslab branch`` commands.
"""
