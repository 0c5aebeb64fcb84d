"""The IRC log bot (``opslab logbot``): ``!log PROJECT message`` in a channel becomes an
entry of the project's Server Admin Log, relayed through the API's bot role.

- :mod:`.text`: what is read from IRC and said back, cleaned of what could do harm;
- :mod:`.pacing`: the reconnect backoff and the limit on the bot's own replies;
- :mod:`.relay`: one line to the API, and the reply that says what became of it;
- :mod:`.worker`: the API's requests in a thread of their own, off the IRC loop;
- :mod:`.session`: the IRC connection (TLS, IRCv3 capabilities, SASL PLAIN, the ping
  watchdog, reconnects) and its handlers;
- :mod:`.cli`: ``opslab logbot``, its settings checked and its secrets read.
"""
