"""Run directories: one exclusive lock, the ledger of model calls that a resumed run replays, atomic files."""
