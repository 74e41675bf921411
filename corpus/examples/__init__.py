"""Data, not code: the self-written example documents `kia demo` runs on, shipped as `kia.examples`."""
