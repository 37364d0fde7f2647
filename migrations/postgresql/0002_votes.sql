-- As ../0002_votes.sql: one vote per person per output, enforced by the database.
ALTER TABLE feedback ADD COLUMN output_id BIGINT REFERENCES outputs (id) ON DELETE CASCADE;
UPDATE feedback SET output_id = (SELECT output_id FROM generations WHERE id = feedback.generation_id);
CREATE UNIQUE INDEX feedback_one_vote ON feedback (output_id, user_id) WHERE kind = 'vote';

CREATE INDEX generations_guild ON generations (guild_id, created_at);
