"""Data, not code: the default taxonomy, the survey's Table 5 gold and its reported shares.

This folder ships inside the package as `kia.labels` (see pyproject.toml) and is read with
`importlib.resources`, so an installed wheel finds it without a checkout.
"""
