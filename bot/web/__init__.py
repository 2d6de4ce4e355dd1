"""The daemon's one HTTP server and what it serves besides Slack's endpoints: the managers' dashboard."""
