"""One ``!log`` line to the API's bot role, and the reply that says what became of it.

The API decides everything (the project exists, the line's form, the nick's
rate, who the person is); the bot passes on what IRC told it and words the
answer for the channel. Its account's password stays in its file
(opslab.apiclient reads it at each request) and in no message.
"""

import logging

from opslab.apiclient import ApiRefused, ApiThrottled, ApiUnavailable, Client, document

log = logging.getLogger(__name__)
PATH = "/v1/log/chat"


class Relay:
    """Posts lines to the API at ``client`` as its bot account; links start with
    ``link_url``; the sender's services account goes along only with
    ``accounts_are_uids`` (the network's accounts are the directory's uids)."""

    def __init__(self, client: Client, link_url: str, accounts_are_uids: bool) -> None:
        self.client = client
        self.link_url = link_url.rstrip("/")
        self.accounts_are_uids = accounts_are_uids

    def __call__(self, nick: str, account: str | None, line: str) -> str:
        """Log ``line`` (``!log PROJECT message``) as ``nick``; the reply for the channel."""
        body = {"line": line, "nick": nick}
        if account is not None and self.accounts_are_uids:
            body["account"] = account
        try:
            answer = self.client.request("POST", PATH, body)
        except ApiThrottled as error:
            return f"{nick}: not logged: {error.reason}"
        except ApiUnavailable as error:
            log.warning("the API is unavailable, a line of %s not logged: %s", nick, error)
            return f"{nick}: not logged: the Server Admin Log is unavailable, try again later"
        except ApiRefused as error:
            if error.status in (401, 403):
                # The bot's own account, not the line: operations must look.
                log.error("the API refused the bot's account (HTTP %d): %s", error.status,
                          error.reason)
                return f"{nick}: not logged: the API refused this bot; operations must look"
            return f"{nick}: not logged: {error.reason}"
        entry = document(answer.body)
        number = entry.get("id") if isinstance(entry, dict) else None
        project = entry.get("project") if isinstance(entry, dict) else None
        if not isinstance(number, int) or isinstance(number, bool) or \
                not isinstance(project, str) or not project.isascii() or \
                not all(char.isalnum() or char == "-" for char in project):
            log.error("the API logged a line of %s but answered no entry id or project", nick)
            return f"{nick}: logged"
        log.info("logged entry %d for %s", number, nick)
        # The entry on its project's log page, for people (its JSON is /v1/log/ID).
        return f"{nick}: logged {self.link_url}/log/{project}#log-{number}"
