"""Paper reproductions as packages: one file per paper section or method, plus a CLI (docs/design.md §1)."""
