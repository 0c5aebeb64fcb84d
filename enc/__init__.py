"""The LDAP-backed external node classifier: ``opslab-enc CERTNAME``.

``classifier`` turns directory entries into a classification, ``cache``
keeps the last good answer of each node, ``render`` prints it for Puppet or
for people, and ``cli`` is the command Puppet's ``external_nodes`` runs.
"""
