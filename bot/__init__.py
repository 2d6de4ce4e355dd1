"""mentiondesk's daemon core: configuration, lifecycle, the pipeline and the command line."""

__version__ = "0.1.0"
