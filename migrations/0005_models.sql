-- What the bot learned from its communities: LoRA adapters trained on their feedback (a
-- generator, written with; or a reward model, choosing among candidates), which one serves each
-- server, and the rows forgotten since (so that an adapter trained on them can be marked).
CREATE TABLE adapters (
    id           TEXT    PRIMARY KEY,          -- its folder's name under ADAPTER_DIR
    kind         TEXT    NOT NULL CHECK (kind IN ('generator', 'reward')),
    guild_id     INTEGER,                      -- trained on this server's feedback; NULL: all
    base_model   TEXT    NOT NULL,
    base_hash    TEXT    NOT NULL,             -- sha256 of the base weights (engine.fingerprint)
    path         TEXT    NOT NULL,
    manifest     TEXT    NOT NULL,             -- JSON: data, hyperparameters, metrics, losses
    promotable   INTEGER NOT NULL,             -- 1: passed its evaluation
    verdict      TEXT    NOT NULL,             -- why it may or may not be promoted
    created_at   TEXT    NOT NULL
);

-- Promotions, newest last: the one in force for a scope and kind is the latest not rolled back.
-- Scope 0 is every server without its own; adapter_id NULL is the base model (no adapter).
CREATE TABLE promotions (
    id             INTEGER PRIMARY KEY,
    scope          INTEGER NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('generator', 'reward')),
    adapter_id     TEXT    REFERENCES adapters (id) ON DELETE CASCADE,
    forced         INTEGER NOT NULL DEFAULT 0,
    promoted_by    INTEGER,
    promoted_at    TEXT    NOT NULL,
    rolled_back_at TEXT
);
CREATE INDEX promotions_current ON promotions (scope, kind, id) WHERE rolled_back_at IS NULL;

-- Ids of generations and feedback deleted by /privacy forget-me: only numbers, nothing of the
-- person. An adapter whose manifest lists one of them was trained on data since forgotten.
CREATE TABLE forgotten_rows (
    source       TEXT    NOT NULL CHECK (source IN ('generation', 'feedback')),
    row_id       INTEGER NOT NULL,
    forgotten_at TEXT    NOT NULL,
    PRIMARY KEY (source, row_id)
);
