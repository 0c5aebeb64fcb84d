"""The cloud-init user-data an instance boots with: opslab's template, filled in.

The template is ``instance-agent/cloud-init.yaml`` (its header lists the
placeholders). It is filled in as data, not as text: the YAML is parsed,
each placeholder scalar replaced by its value, and the document written
again, so no value (a URL with a quote, a base DN with a colon) can change
the document's structure.

The site's own cloud-config
---------------------------
A site needs cloud-config on every instance that the template cannot know:
an apt proxy (``apt: {proxy: ...}``), its CA (``ca_certs: {trusted: [...]}``),
``/etc/pip.conf`` pointing at an internal index (``write_files``).
``instances.cloud_config_file`` names a YAML file holding such a mapping; it
is read at every launch and merged into the filled-in template, and the
user-data stays one ``#cloud-config`` document (cloud-init's own
``merge_how`` is for several parts, and plays no role here). The rules:

- a key only one of the two has is taken as it is. The site may add any
  cloud-config key, ``users`` and ``ssh_authorized_keys`` included (the
  template has neither; a ``users`` list without ``default`` replaces the
  image's default user, as cloud-init always does);
- lists both have (``write_files``, ``packages``, ``runcmd``, ``bootcmd``,
  ...) are concatenated, the site's entries first: within a module the
  site's files and commands come before opslab's;
- mappings both have are merged by these same rules, key by key;
- anything else both have is refused, naming the key: a scalar set by both
  (even to the same value), or a clash of types (a list against a mapping).
  The template's settings are never overridden, and for the same reason a
  ``write_files`` entry for a path the template writes (the host token) is
  refused: a later entry, or a deferred one, would replace opslab's file.

The site file is taken literally: its placeholders are not filled in. A
``#cloud-config`` first line in it is a comment, as any other; an empty
file adds nothing. Whatever comes first within a list, cloud-init runs its
modules in its own order (``/etc/cloud/cloud.cfg``): ``bootcmd``,
``write_files`` and ``ca_certs`` in the init stage, ``apt`` in the config
stage, ``packages`` and then the ``runcmd`` script in the final stage; so
the site's CA, proxy and files are in place before the bootstrap (and
before the template's own apt-get, should the image lack curl).

Errors are ValueError naming the file and the key, never what the key is
set to: the user-data holds the host token, and the site file may hold a
proxy's password.
"""

import posixpath
from collections.abc import Mapping
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


def render(settings: Settings, cloud_config_file: str | None = None) -> str:
    """The user-data for ``settings``, with the site's ``cloud_config_file`` merged in;
    ValueError names a value that cannot go into it, or the file and key that cannot."""
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
    if cloud_config_file is not None:
        try:
            document = merged(site_config(cloud_config_file), document)
        except ValueError as error:
            raise ValueError(f"the site's cloud-config {cloud_config_file}: {error}") from None
    return HEADER + str(yaml.safe_dump(document, sort_keys=False, default_flow_style=False))


def site_config(path: str) -> dict[str, Any]:
    """The cloud-config mapping in the file ``path``; ValueError says why there is none."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise ValueError(f"cannot be read: {error.strerror or type(error).__name__}") from None
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"is not valid YAML{_where(error)}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ValueError(f"must be a mapping of cloud-config keys, not {_kind(document)}")
    return document


def _where(error: yaml.YAMLError) -> str:
    """What PyYAML found and where, without its excerpt of the text (a proxy's password,
    say, may be on that line)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        said = ", ".join(part for part in (error.context, error.problem) if part)
        return f": {said or 'unexpected text'} (line {mark.line + 1}, column {mark.column + 1})"
    return ""


def merged(site: Mapping[str, Any], template: Mapping[str, Any],
           within: str = "") -> dict[str, Any]:
    """``template`` with ``site`` merged in by the rules of the module doc; ValueError names
    the first key (dotted below ``within``) that cannot be merged."""
    result = dict(template)
    for key, value in site.items():
        name = f"{within}{key}"
        result[key] = _merged_value(value, template[key], name) if key in template else value
    return result


def _merged_value(site: Any, template: Any, name: str) -> Any:
    if isinstance(site, dict) and isinstance(template, dict):
        return merged(site, template, f"{name}.")
    if isinstance(site, list) and isinstance(template, list):
        if name == "write_files":
            _refuse_template_paths(site, template)
        return site + template
    if isinstance(site, dict | list) or isinstance(template, dict | list):
        raise ValueError(f"{name} is {_kind(site)} in the site's file but {_kind(template)} "
                         "in opslab's template: only two lists or two mappings are merged")
    raise ValueError(f"{name} is set by opslab's template too: the template's settings are "
                     "never replaced")


def _refuse_template_paths(site: list[Any], template: list[Any]) -> None:
    """No site file may replace one the template writes (the host token)."""
    ours = {_path(entry) for entry in template} - {None}
    for index, entry in enumerate(site):
        path = _path(entry)
        if path in ours:
            raise ValueError(f"write_files[{index}] writes {path}, a file of opslab's template")


def _path(entry: Any) -> str | None:
    """A write_files entry's path, normalized (``/etc//x`` is ``/etc/x``)."""
    path = entry.get("path") if isinstance(entry, dict) else None
    return posixpath.normpath(path) if isinstance(path, str) else None


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "null" if value is None else "a scalar"


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
