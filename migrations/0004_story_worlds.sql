-- Story worlds: lorebooks and characters, the author's note, branches, and the server's votes.

-- A lore entry belongs to a story's lorebook, or to a channel's (for chat and brainstorm where
-- no story is going). Keys trigger it in a prompt; an always-on entry is in every prompt.
CREATE TABLE lore_entries (
    id          INTEGER PRIMARY KEY,
    guild_id    INTEGER,
    scope       TEXT    NOT NULL CHECK (scope IN ('story', 'channel')),
    scope_id    INTEGER NOT NULL,            -- the story's id, or the channel's
    kind        TEXT    NOT NULL DEFAULT 'entry' CHECK (kind IN ('entry', 'character')),
    name        TEXT    NOT NULL,
    keys        TEXT    NOT NULL,            -- JSON list: whole words, or patterns if regex
    regex       INTEGER NOT NULL DEFAULT 0,
    always      INTEGER NOT NULL DEFAULT 0,
    priority    INTEGER NOT NULL DEFAULT 100,
    text        TEXT    NOT NULL,
    voice       TEXT    NOT NULL DEFAULT '', -- a character's way of speaking
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_by  INTEGER,                     -- NULL once its writer asked to be forgotten
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
CREATE UNIQUE INDEX lore_entries_name ON lore_entries (scope, scope_id, name COLLATE NOCASE);

-- The author's note steers the next parts' style; it sits near the end of the prompt.
ALTER TABLE stories ADD COLUMN note TEXT NOT NULL DEFAULT '';
-- A branch shares its parent's parts up to `branch_from` (a position in the parent): they are
-- read from the parent, never copied, so an edit of a shared part shows in both.
ALTER TABLE stories ADD COLUMN parent_id INTEGER REFERENCES stories (id) ON DELETE SET NULL;
ALTER TABLE stories ADD COLUMN branch_from INTEGER;
-- Positions are handed out by this counter and never reused, so a part added after an undo
-- can never slip under a branch point and be read by a branch as shared.
ALTER TABLE stories ADD COLUMN last_position INTEGER NOT NULL DEFAULT 0;
UPDATE stories SET last_position =
    (SELECT COALESCE(MAX(position), 0) FROM story_segments WHERE story_id = stories.id);

-- A vote on where the story goes: up to three directions, one ballot per person (changeable
-- until it closes), at most one open vote per story. Open votes outlive a restart.
CREATE TABLE story_votes (
    id          INTEGER PRIMARY KEY,
    story_id    INTEGER NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    guild_id    INTEGER,
    channel_id  INTEGER NOT NULL,
    message_id  INTEGER,                     -- the vote's message, once posted
    options     TEXT    NOT NULL,            -- JSON list of directions
    created_by  INTEGER,
    closes_at   TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'open'
                CHECK (state IN ('open', 'closed', 'cancelled')),
    winner      INTEGER,                     -- index into options; NULL if nobody voted
    acted_at    TEXT,                        -- the winner's part was asked for (journalled):
                                             -- a closed vote without it is acted on at start
    created_at  TEXT    NOT NULL
);
CREATE UNIQUE INDEX story_votes_one_open ON story_votes (story_id) WHERE state = 'open';

CREATE TABLE story_ballots (
    vote_id     INTEGER NOT NULL REFERENCES story_votes (id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL,
    choice      INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (vote_id, user_id)
);
