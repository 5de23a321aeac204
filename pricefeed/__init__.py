"""The `pricefeed` command: the composition root that knows both services."""
