"""The cloud-init user-data an instance boots with: opslab's template, filled in.

The template is ``instance-agent/cloud-init.yaml`` (its header lists the
placeholders). It is filled in as data, not as text: the YAML is parsed,
each placeholder scalar replaced by its value, and the document written
again, so no value (a URL with a quote, a base DN with a colon) can change
the document's structure.
"""

from importlib import resources
from typing import Any, NamedTuple

import yaml

from opslab.names import has_control_characters

HEADER = "#cloud-config\n"


class Settings(NamedTuple):
    """What an instance needs to find opslab; every value is one line of text."""

    bootstrap_url: str
    package: str
    api_url: str
    ldap_uri: str
    ldap_base: str
    remote: str
    certname: str
    host_token: str
    # More options for `opslab agent bootstrap` (e.g. --ldap-starttls).
    bootstrap_options: tuple[str, ...] = ()


def render(settings: Settings) -> str:
    """The user-data for ``settings``; ValueError names a value that cannot go into it."""
    values = {f"@{name.upper()}@": value for name, value in settings._asdict().items()
              if name != "bootstrap_options"}
    for placeholder, value in values.items():
        if not value or has_control_characters(value):
            raise ValueError(f"{placeholder.strip('@').lower()} must be one non-empty line "
                             f"of text")
    for option in settings.bootstrap_options:
        if not option or has_control_characters(option):
            raise ValueError(f"bootstrap option {option!r:.40} must be one non-empty line")
    template = resources.files("opslab.agent").joinpath("cloud-init.yaml").read_text("utf-8")
    document = _filled(yaml.safe_load(template), values)
    [command] = document["runcmd"]
    command.extend(settings.bootstrap_options)
    return HEADER + str(yaml.safe_dump(document, sort_keys=False, default_flow_style=False))


def _filled(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _filled(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_filled(item, values) for item in node]
    if isinstance(node, str):
        # A placeholder is a whole scalar ("@HOST_TOKEN@\n" in a block scalar).
        stripped = node.strip()
        if stripped in values:
            return node.replace(stripped, values[stripped])
    return node
