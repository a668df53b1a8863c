"""Archive runs: many files to rows, resumable, on this machine or on Ray (pneumo predict DIR --out FILE)."""
