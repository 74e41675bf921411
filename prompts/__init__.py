"""Data, not code: the prompt templates, shipped inside the package as `kia.prompts`."""
