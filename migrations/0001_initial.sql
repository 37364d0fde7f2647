-- The first schema: settings, generations with their alternatives, feedback, stories.
-- Discord ids are 64-bit snowflakes and fit SQLite's INTEGER. Times are ISO-8601 UTC text.

-- Settings are key/value overrides per scope; defaults live in code. A channel row beats a
-- guild row, which beats the default.
CREATE TABLE settings (
    scope       TEXT    NOT NULL CHECK (scope IN ('guild', 'channel')),
    scope_id    INTEGER NOT NULL,
    guild_id    INTEGER,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,            -- JSON
    updated_by  INTEGER,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (scope, scope_id, key)
);

-- One message the bot shows; it can hold several alternatives (generations), one chosen.
CREATE TABLE outputs (
    id            INTEGER PRIMARY KEY,
    guild_id      INTEGER,
    channel_id    INTEGER NOT NULL,
    message_id    INTEGER UNIQUE,            -- set once Discord has accepted the message
    requester_id  INTEGER NOT NULL,
    command       TEXT    NOT NULL,
    chosen_id     INTEGER REFERENCES generations (id) ON DELETE SET NULL,
    created_at    TEXT    NOT NULL
);

-- One finished run of the model. Only finished work is stored: a row is written once, whole.
CREATE TABLE generations (
    id                 INTEGER PRIMARY KEY,
    output_id          INTEGER REFERENCES outputs (id) ON DELETE CASCADE,
    guild_id           INTEGER,
    channel_id         INTEGER NOT NULL,
    user_id            INTEGER NOT NULL,
    command            TEXT    NOT NULL,     -- poem, brainstorm, story, ...
    prompt             TEXT    NOT NULL,     -- JSON: the task's inputs and the rendered prompt
    params             TEXT    NOT NULL,     -- JSON: sampling parameters actually used
    model              TEXT    NOT NULL,
    output             TEXT    NOT NULL,
    finish_reason      TEXT    NOT NULL,     -- stop | length
    refines_id         INTEGER REFERENCES generations (id) ON DELETE SET NULL,
    refine_kind        TEXT,                 -- regenerate | longer | shorter | remix | expand ...
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    queued_ms          INTEGER NOT NULL,
    generation_ms      INTEGER NOT NULL,
    created_at         TEXT    NOT NULL
);
CREATE INDEX generations_output ON generations (output_id);
CREATE INDEX generations_channel ON generations (channel_id, created_at);
CREATE INDEX generations_user ON generations (user_id);

-- What people said about a generation: a vote, a keep, a reason. One row per user and kind.
CREATE TABLE feedback (
    id             INTEGER PRIMARY KEY,
    generation_id  INTEGER NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    user_id        INTEGER NOT NULL,
    kind           TEXT    NOT NULL,         -- vote | keep | reason
    value          TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    UNIQUE (generation_id, user_id, kind)
);
CREATE INDEX feedback_user ON feedback (user_id);

-- A story co-written in a channel or thread; at most one active story per channel.
CREATE TABLE stories (
    id             INTEGER PRIMARY KEY,
    guild_id       INTEGER,
    channel_id     INTEGER NOT NULL,
    title          TEXT    NOT NULL,
    premise        TEXT    NOT NULL,
    genre          TEXT,
    status         TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    summary        TEXT    NOT NULL DEFAULT '',   -- rolling summary of segments <= summary_upto
    summary_upto   INTEGER NOT NULL DEFAULT 0,
    created_by     INTEGER NOT NULL,
    created_at     TEXT    NOT NULL,
    ended_at       TEXT
);
CREATE UNIQUE INDEX stories_one_active ON stories (channel_id) WHERE status = 'active';

CREATE TABLE story_segments (
    id             INTEGER PRIMARY KEY,
    story_id       INTEGER NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    channel_id     INTEGER NOT NULL,
    author_id      INTEGER,                  -- NULL once anonymised
    text           TEXT    NOT NULL,
    position       INTEGER NOT NULL,
    source         TEXT    NOT NULL CHECK (source IN ('user', 'bot')),
    generation_id  INTEGER REFERENCES generations (id) ON DELETE SET NULL,
    message_id     INTEGER,
    created_at     TEXT    NOT NULL,
    UNIQUE (story_id, position)
);
CREATE INDEX story_segments_message ON story_segments (message_id);
