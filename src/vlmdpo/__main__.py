"""`python -m vlmdpo ...` and `accelerate launch -m vlmdpo ...` run the CLI."""
from __future__ import annotations

from vlmdpo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
