"""Images people post: read safely (`load`), measured (`measure`), and drawn (`picture`)."""
