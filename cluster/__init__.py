"""corral's core: the inventory of nodes, SSH to them, and everything the CLI and GUI do on top."""
