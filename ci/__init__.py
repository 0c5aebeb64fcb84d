"""The CI harness: a reviewer's comment in Gerrit tests the change on a throwaway
clone of the infrastructure, and Jenkins votes Verified with what failed.

Shaped like Zuul's Gerrit driver, one module per part. Built so far, the parts
that need neither a Gerrit nor a Jenkins server: :mod:`.events` reads Gerrit's
events (stream-events lines and webhook bodies, 2.x and 3.x shapes) into typed
objects, with a key that recognises one event arriving twice and a bounded set
of the keys already seen; :mod:`.trigger` decides which comments start a run
(the trigger phrases, the projects and branches, who may ask) and which events
cancel one; :mod:`.parameters` makes the Gerrit Trigger plugin's ``GERRIT_*``
build parameters from an event, and reads them back inside the job;
:mod:`.reporter` votes Verified through pygerrit2 on the exact revision tested
(nothing on a stale patch set or a closed change, never -1 for an
infrastructure failure), with a message made from a run's result
(:mod:`.result`); :mod:`.source` fetches a patch set's ``refs/changes/NN/C/P``,
checks it is the announced revision, and lists the files and modules it touches;
:mod:`.connection` reads ``gerrit stream-events`` over SSH with paramiko (the
host key checked, keepalives, a watchdog, reconnects with backoff) onto the one
queue, each event once, and calls a hook after a reconnect for the catch-up.

To come (issue 13): the rest of the connection (events by webhook onto the same
queue, the REST catch-up after a reconnect), the Jenkins side (starting,
following and cancelling builds with python-jenkins) and ``opslab ci run``,
the job itself. The wire facts all of them follow are in
``../shared/contracts/gerrit-jenkins-openstack.md``; see docs/ci.md.
"""
