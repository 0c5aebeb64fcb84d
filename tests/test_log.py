"""opslab.log: the one logging setup, its lines on a terminal, under journald, and for the
commands whose stderr is a documented contract."""

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from opslab.log import context, setup


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[Path]:
    """A file the opslab loggers write to; the setup is put back to nothing after."""
    path = tmp_path / "stderr"
    yield path
    root = logging.getLogger("opslab")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_a_line_says_level_logger_message_and_its_context(
    logged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    with logged.open("w", encoding="utf-8") as stream:
        setup(stream=stream)
        log = context(logging.getLogger("opslab.agent"), certname="web1.web.example.org",
                      commit=None)
        log.info("applying")
        context(log, trigger="drift", reason="a b \"c\"").warning("the API is unreachable")
        logging.getLogger("opslab.agent").debug("not at the default level")
    assert lines(logged) == [
        "info opslab.agent: applying certname=web1.web.example.org",
        'warning opslab.agent: the API is unreachable certname=web1.web.example.org '
        'trigger=drift reason="a b \\"c\\""',
    ]


def test_under_journald_every_line_carries_its_priority(
    logged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with logged.open("w", encoding="utf-8") as stream:
        status = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
        setup(stream=stream)
        log = logging.getLogger("opslab.api")
        log.warning("slow")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    written = lines(logged)
    assert written[0] == "<4>warning opslab.api: slow"
    assert written[1] == "<3>error opslab.api: failed"
    # A traceback's every line keeps the priority, so journalctl -p err shows it whole.
    assert all(line.startswith("<3>") for line in written[1:])
    assert written[-1] == "<3>RuntimeError: boom"


def test_a_command_with_a_stderr_contract_keeps_its_lines(
    logged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    with logged.open("w", encoding="utf-8") as stream:
        setup(stream=stream, prefix="opslab-enc")
        log = logging.getLogger("opslab.enc")
        log.error("cannot classify x")
        log.warning("directory unavailable")
        log.info("unknown node x")
        log.critical("internal error, please report")
    assert lines(logged) == ["opslab-enc: error: cannot classify x",
                             "opslab-enc: warning: directory unavailable",
                             "opslab-enc: unknown node x",
                             "opslab-enc: internal error, please report"]
