"""Which mentions are complaints: the trained model (artifacts/) and the `classify` command."""
