"""Reports for managers: the figures, the `report` command, the scheduled summaries and their chart."""
