-- Votes count once per person per output (not per alternative), so feedback learns which
-- output a row belongs to, and the database itself refuses a second vote on the same output.
ALTER TABLE feedback ADD COLUMN output_id INTEGER REFERENCES outputs (id) ON DELETE CASCADE;
UPDATE feedback SET output_id = (SELECT output_id FROM generations WHERE id = feedback.generation_id);
CREATE UNIQUE INDEX feedback_one_vote ON feedback (output_id, user_id) WHERE kind = 'vote';

-- Daily budgets count a server's generations since midnight (UTC).
CREATE INDEX generations_guild ON generations (guild_id, created_at);
