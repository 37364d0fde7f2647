"""A story world's lore: entries, how they are chosen for a prompt, and the files people bring."""
