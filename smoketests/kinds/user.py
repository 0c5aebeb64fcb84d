"""user: an account exists (in its groups, with its home and shell), or not.

    user: {name: www-data}
    user: {name: deploy, uid: 2001, groups: [www-data], home: /srv/deploy, shell: /bin/bash}
    user: {name: guest, exists: false}

Accounts are looked up as every program does (NSS), so people from the
directory (nslcd) count as well as /etc/passwd; ``groups`` are the groups
it must be in, its primary group or as a member.
"""

import grp
import os
import pwd
from typing import Any

from . import Context, Failed, Field, quoted, text_list

FIELDS = {
    "name": Field((str,), required=True),
    "exists": Field((bool,)),
    "uid": Field((int,), minimum=0, maximum=4294967294),
    "groups": Field((str,), many=True),
    "home": Field((str,)),
    "shell": Field((str,)),
}


def problem(values: dict[str, Any], outside: bool) -> str | None:
    return "an account cannot be seen from outside: leave outside off" if outside else None


def check(values: dict[str, Any], context: Context) -> str:
    name = str(values["name"])
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        if values.get("exists", True):
            raise Failed(f"there is no user {quoted(name)}") from None
        return f"there is no user {quoted(name)}"
    if not values.get("exists", True):
        raise Failed(f"user {name} exists (uid {account.pw_uid})")
    for key, found in (("uid", account.pw_uid), ("home", account.pw_dir),
                       ("shell", account.pw_shell)):
        if key in values and values[key] != found:
            raise Failed(f"user {name} has {key} {found}, not {values[key]}")
    wanted = text_list(values.get("groups"))
    if wanted:
        member_of = {grp.getgrgid(gid).gr_name for gid in
                     os.getgrouplist(name, account.pw_gid) if _known(gid)}
        missing = [group for group in wanted if group not in member_of]
        if missing:
            raise Failed(f"user {name} is not in {', '.join(missing)} "
                         f"(only in {', '.join(sorted(member_of))})")
    return f"user {name} exists (uid {account.pw_uid})"


def _known(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
        return True
    except KeyError:
        return False
