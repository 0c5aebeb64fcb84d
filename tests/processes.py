"""What is left of the processes a test started: found by their command lines in /proc."""

import time
from pathlib import Path


def processes_mentioning(text: str) -> list[str]:
    """The command lines of live processes that mention ``text`` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in command:
            found.append(f"{entry.name}: {command}")
    return found


def settle(text: str, deadline: float = 3.0) -> list[str]:
    """Processes still mentioning ``text`` once those being killed had ``deadline`` s to go."""
    give_up = time.monotonic() + deadline
    while (left := processes_mentioning(text)) and time.monotonic() < give_up:
        time.sleep(0.05)
    return left
