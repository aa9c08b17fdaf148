"""The gate device agent (issue 16): decides each tap online within a deadline, falls back to
an offline decision from a local SQLite snapshot, and uploads its offline taps when the
network returns."""
