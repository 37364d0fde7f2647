"""Developer tools, not shipped with the bot: `python -m tools.bench` (speed, `make bench`) and
`python -m tools.eval` (what the model writes, by form and command, `make eval`)."""
