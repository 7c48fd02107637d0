"""At-initialization probes: reject unstable candidate layers before any training (see :mod:`.screen`)."""
