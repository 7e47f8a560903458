"""Several HTTP processes around one core (`serve --api-server-count N`): the link, the HTTP side, the core side."""
