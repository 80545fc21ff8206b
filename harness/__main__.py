"""``python -m harness`` (also what ``torchrun -m harness`` starts)."""
from harness.cli import main

raise SystemExit(main())
