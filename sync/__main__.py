"""`python -m sync` is the same CLI as `comm100-sync`."""

from sync.cli import main

raise SystemExit(main())
