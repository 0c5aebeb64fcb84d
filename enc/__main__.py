"""``python -m opslab.enc CERTNAME`` is ``opslab-enc CERTNAME``."""

from .cli import main

raise SystemExit(main())
