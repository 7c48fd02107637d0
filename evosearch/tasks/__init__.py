"""Tasks: built-in datasets and the networks that candidate layers are plugged into."""
