"""group: a group exists (with its members), or not.

    group: {name: www-data}
    group: {name: web, gid: 6001, members: [vera]}
    group: {name: games, exists: false}

Looked up through NSS like every program does; ``members`` must each be in
the group, as a listed member or by their primary group.
"""

import grp
import pwd
from typing import Any

from . import Context, Failed, Field, quoted, text_list

FIELDS = {
    "name": Field((str,), required=True),
    "exists": Field((bool,)),
    "gid": Field((int,), minimum=0, maximum=4294967294),
    "members": Field((str,), many=True),
}


def problem(values: dict[str, Any], outside: bool) -> str | None:
    return "a group cannot be seen from outside: leave outside off" if outside else None


def check(values: dict[str, Any], context: Context) -> str:
    name = str(values["name"])
    try:
        group = grp.getgrnam(name)
    except KeyError:
        if values.get("exists", True):
            raise Failed(f"there is no group {quoted(name)}") from None
        return f"there is no group {quoted(name)}"
    if not values.get("exists", True):
        raise Failed(f"group {name} exists (gid {group.gr_gid})")
    if "gid" in values and values["gid"] != group.gr_gid:
        raise Failed(f"group {name} has gid {group.gr_gid}, not {values['gid']}")
    missing = [member for member in text_list(values.get("members"))
               if member not in group.gr_mem and _primary_gid(member) != group.gr_gid]
    if missing:
        raise Failed(f"{', '.join(missing)} not in group {name}")
    return f"group {name} exists (gid {group.gr_gid})"


def _primary_gid(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_gid
    except KeyError:
        return None
