"""Learning the community's taste: datasets from feedback, adapters, reward models."""
