"""Scheduled jobs: the gateway's (``scheduler``, server side) and a participant's nightly
run (``participant``, client side: it imports nothing of the server, so this package's
``__init__`` imports nothing either)."""
