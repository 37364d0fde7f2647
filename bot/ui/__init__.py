"""Discord helpers shared by the cogs."""
