"""The coordination API: self-service projects and hosts, run reports, automatic documentation.

``create_app`` is the application factory; ``store`` holds the SQL side
(audit log, Server Admin Log, run reports, host tokens) with its Alembic
migrations in ``migrations/``.
"""
