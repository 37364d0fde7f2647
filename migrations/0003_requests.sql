-- The request journal: every request the bot accepted (it deferred the interaction or posted
-- the message its answer goes into), written in the same step, so that a crash or a restart
-- loses none of them. A row moves pending -> saved (its generation is stored, in the same
-- transaction) -> done (shown); or to failed, cancelled, or interrupted (too old to run again
-- after a restart: its message says so and offers to ask again).
CREATE TABLE requests (
    id                 INTEGER PRIMARY KEY,
    state              TEXT    NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'saved', 'done', 'failed', 'cancelled',
                                        'interrupted')),
    command            TEXT    NOT NULL,
    task               TEXT    NOT NULL,     -- JSON: inputs, prompt, params, title (to rebuild it)
    guild_id           INTEGER,
    channel_id         INTEGER NOT NULL,
    user_id            INTEGER NOT NULL,
    message_id         INTEGER NOT NULL,     -- the bot's message the answer is written into
    interaction_token  TEXT,                 -- edits that message while valid; cleared at the end
    token_expires_at   TEXT,
    output_id          INTEGER REFERENCES outputs (id) ON DELETE CASCADE,  -- its output: a
                                                 -- refinement's at once, else once saved
    refines_id         INTEGER REFERENCES generations (id) ON DELETE SET NULL,
    refine_kind        TEXT,
    generation_id      INTEGER REFERENCES generations (id) ON DELETE SET NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,  -- times the model started on it
    error              TEXT,
    created_at         TEXT    NOT NULL,
    updated_at         TEXT    NOT NULL
);
CREATE INDEX requests_unfinished ON requests (id) WHERE state IN ('pending', 'saved');
CREATE INDEX requests_user ON requests (user_id);

-- A generation is one story part at most, so a story turn finished again after a crash does
-- not land twice.
CREATE UNIQUE INDEX story_segments_generation ON story_segments (generation_id)
    WHERE generation_id IS NOT NULL;
