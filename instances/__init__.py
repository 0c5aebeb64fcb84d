"""Instances: machines launched for hosts, through one provider interface.

Two providers behind :class:`opslab.instances.provider.Provider`, chosen by
``instances.provider``: ``openstack`` (openstacksdk and a standard
``clouds.yaml``) and ``local`` (containers of this machine's own operating
system, the embedded default for the demo and the tests). Both boot the
same cloud-init user-data.
"""
