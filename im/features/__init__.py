"""Feature logic, one module per feature; each registers its handlers in im.registry."""
