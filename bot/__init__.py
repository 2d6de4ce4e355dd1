"""mentiondesk's daemon core: configuration, events, lifecycle and the command line.

One sub-package per side of the flow (mastodon/, classify/, slack/); imports only point down the flow,
as tests/test_layers.py checks.
"""

__version__ = "0.1.0"
