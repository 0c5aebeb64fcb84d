"""Turning a Classification into text: YAML for Puppet, a report for people."""

from typing import Any

import yaml

from .classifier import Classification, Value

_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _QuotingDumper(_Dumper):  # type: ignore[valid-type,misc]
    """Safe YAML in which every string is double-quoted.

    Puppet reads ENC output with Ruby's safe YAML loader, whose idea of a
    plain scalar's type differs from PyYAML's ("1,000" is an integer and
    ":name" a Symbol to Ruby). Quoting every string leaves nothing to guess.
    """


def _quoted_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')


_QuotingDumper.add_representer(str, _quoted_str)


def to_yaml(classification: Classification) -> str:
    """The ENC answer for Puppet's exec node terminus."""
    text: str = yaml.dump(
        classification.to_enc(),
        Dumper=_QuotingDumper,
        explicit_start=True,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1 << 16,
    )
    return text


def explain(classification: Classification) -> str:
    """Where every class, variable and the environment came from."""
    lines = [f"node {classification.node}", "layers (most specific first):"]
    lines += [f"  {role:8} {dn}" for role, dn in classification.layers]

    if classification.environment is None:
        lines.append("environment: (none set; Puppet keeps the agent's)")
    else:
        origin = classification.environment_origin or "the built-in default"
        lines.append(
            f"environment: {classification.environment}"
            f"  (branch {classification.branch!r} from {origin})"
        )

    lines.append("classes:")
    for name, origins in classification.classes.items():
        lines.append(f"  {name}  from {origins[0]}")
        lines += [f"      also {origin}" for origin in origins[1:]]
        for key, value in classification.class_parameters.get(name, {}).items():
            lines.append(f"    {key} = {_show(value)}  from {value.origin}")

    lines.append("parameters:")
    for name, value in classification.parameters.items():
        lines.append(f"  {name} = {_show(value)}  from {value.origin}")

    if classification.overridden:
        lines.append("overridden by a more specific entry:")
        for name, loser, winner in classification.overridden:
            lines.append(f"  {name} = {_show(loser)}  from {loser.origin}  (beaten by {winner})")
    if classification.unused_class_parameters:
        lines.append("class parameters for classes this node does not include:")
        for class_name, params in classification.unused_class_parameters.items():
            for key, value in params.items():
                lines.append(f"  {class_name}::{key} = {_show(value)}  from {value.origin}")
    if classification.warnings:
        lines.append("warnings:")
        lines += [f"  {warning}" for warning in classification.warnings]
    return "\n".join(lines) + "\n"


def _show(value: Value) -> str:
    shown: Any = value.value
    return yaml.dump(shown, Dumper=_QuotingDumper, default_flow_style=True, width=1 << 16).strip(
        "\n"
    ).removesuffix("\n...")
