"""What managers read: the figures of a period (figures.py) and the `mentiondesk report` command (cli.py)."""
