"""Built-in recipes (TOML), installed as coreg_edge.recipes package data."""
