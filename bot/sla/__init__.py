"""The SLA engine: business calendars and policies (pure, read by the config), and the clocks built on them."""
