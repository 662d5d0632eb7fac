"""Running copick's own test suite (from its source distribution) against the catalog root: see run.sh."""
