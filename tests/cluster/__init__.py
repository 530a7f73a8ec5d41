"""Real clusters on one machine for tests: hosts in network namespaces (netns.py)."""
