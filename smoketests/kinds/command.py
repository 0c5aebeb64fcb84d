"""command: a command exits as it should, and says what it should.

    command:
      run: "nginx -t"            # a shell command line, or a list (no shell)
      exit_status: 0             # the default
      stdout: "syntax is ok"     # texts its output must contain (one or a list)
      stderr: "successful"
      stdout_absent: "error"     # texts it must not contain
      user: www-data             # run as this user (needs root; default: who runs the checks)

It runs with a plain environment (PATH, LANG=C.UTF-8, HOME), with nothing
to read (/dev/null, not the terminal of whoever runs the checks), in its own
process group, stopped with all its children at the check's timeout. Of
its output, the first MiB of each stream is kept: a command that prints
more passes or fails by its exit status alone, and fails when the check
asks about its output (which was not all seen). A command is code from the
control repository, reviewed like the manifests beside it, which run as
root anyway. In a shell line, each reference is filled in quoted for the
shell, as one word (``echo ${param.greeting}`` prints the greeting whatever
it holds: a ``;`` in it is not a second command); so a reference may not
stand inside quotes there.
"""

import os
import pwd
from typing import Any

from .. import child
from . import Context, Failed, Field, quoted, tail, text_list

FIELDS = {
    "run": Field((str, list), required=True, shell_line=True),
    "exit_status": Field((int,), minimum=0, maximum=255, many=True),
    "stdout": Field((str,), many=True),
    "stderr": Field((str,), many=True),
    "stdout_absent": Field((str,), many=True),
    "user": Field((str,)),
}
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def problem(values: dict[str, Any], outside: bool) -> str | None:
    if outside:
        return "a command runs on the host: leave outside off"
    command = values.get("run")
    if isinstance(command, list) and (not command or not all(isinstance(part, str)
                                                             for part in command)):
        return "run must be a text or a non-empty list of texts"
    if command == "":
        return "run must not be empty"
    return None


def check(values: dict[str, Any], context: Context) -> str:
    command = values["run"]
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else [str(p) for p in command]
    user = values.get("user")
    home = "/"
    if user is not None:
        try:
            account = pwd.getpwnam(str(user))
        except KeyError:
            raise Failed(f"there is no user {quoted(user)}") from None
        home = account.pw_dir
        if account.pw_uid != os.geteuid():
            if os.geteuid() != 0:
                raise Failed(f"running as {user} needs root")
            argv = ["runuser", "-u", str(user), "--", *argv]
    else:
        home = os.environ.get("HOME", "/")
    # Through sh, a program not found is sh's exit 127, as for a shell line.
    argv = ["/bin/sh", "-c", 'exec "$@"', "sh", *argv]
    environment = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": home}
    try:
        ran = child.run(argv, context.left(), env=environment)
    except child.TimedOut as timed_out:
        raise Failed(f"{_shown(command)} ran past {context.timeout:g} s and was stopped",
                     tail(timed_out.output)) from None
    except OSError as error:
        raise Failed(f"{_shown(command)} could not run: {error.strerror or error}") from None
    stdout, stderr = (stream.decode("utf-8", "replace") for stream in (ran.stdout, ran.stderr))
    output = tail(stdout + ("\n" + stderr if stderr else ""))
    wanted = values.get("exit_status", 0)
    statuses = wanted if isinstance(wanted, list) else [wanted]
    if ran.returncode not in statuses:
        raise Failed(f"{_shown(command)} exited {ran.returncode}, "
                     f"not {' or '.join(map(str, statuses))}", output)
    if ran.over and any(key in values for key in ("stdout", "stderr", "stdout_absent")):
        raise Failed(f"{_shown(command)} printed more than {child.MAX_OUTPUT // 1024 // 1024} "
                     f"MiB: its output is not checked", output)
    for key, stream in (("stdout", stdout), ("stderr", stderr)):
        for piece in text_list(values.get(key)):
            if piece not in stream:
                raise Failed(f"the {key} of {_shown(command)} does not contain {quoted(piece)}",
                             output)
    for piece in text_list(values.get("stdout_absent")):
        if piece in stdout:
            raise Failed(f"the stdout of {_shown(command)} contains {quoted(piece)}", output)
    return f"{_shown(command)} exited {ran.returncode}"


def _shown(command: str | list[str]) -> str:
    return quoted(command if isinstance(command, str) else " ".join(command), 100)
