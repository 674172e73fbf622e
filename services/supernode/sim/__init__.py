"""`supernode sim`: the whole supernode's engines in one process, on virtual time."""
