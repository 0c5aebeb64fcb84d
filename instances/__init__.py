"""Instances: machines launched for hosts, through one provider interface.

Two providers behind :class:`opslab.instances.provider.Provider`, chosen by
``instances.provider``: ``openstack`` (openstacksdk and a standard
``clouds.yaml``) and ``local`` (containers of this machine's own operating
system, the embedded default for the demo and the tests). Both boot the
same cloud-init user-data.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opslab.config import Config

    from .provider import Provider


def provider_for(config: "Config") -> "Provider":
    """The provider ``instances.provider`` names (its libraries are imported only here)."""
    if config.instances.provider == "openstack":
        from .openstack import OpenStackProvider

        return OpenStackProvider(config.instances)
    from .local import LocalProvider

    settings = config.instances
    return LocalProvider(settings, root=settings.local_root, image=settings.local_image,
                         subnet=settings.local_subnet)
