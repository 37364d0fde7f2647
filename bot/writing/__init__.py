"""The use cases: what the bot writes and how, with no Discord in sight.

`run` takes a task from the queue to a saved text (waiting, streaming, retries, saving);
`tasks` builds each command's task; `story` and `refine` are the story and refinement use
cases. The Discord side (`bot.ui`, `cogs`) only renders and delivers what these return.
"""
